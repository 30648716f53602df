#!/usr/bin/env bash
# Usage: .ci/qemu-backports.sh DIR
#
# Fetches Debian's newest QEMU (qemu-system-x86 from trixie-backports, 11.x) with its
# dependencies into DIR, unpacks them there (nothing is installed: the machine's own
# QEMU and libraries stay as they are), and prints the path of a wrapper that runs
# that QEMU with its own dynamic loader, libraries and firmware. .ci/run then runs the
# real-QEMU tests once more with QMPLEX_QEMU set to it.
#
# apt works from a private configuration under DIR (its own sources, lists, cache and
# an empty dpkg status), so the dependency closure is computed as for an empty trixie
# system: about 90 packages, 37 MB, some 15 seconds. Exits non-zero, printing nothing
# on stdout, when the packages cannot be had.
set -euo pipefail
dir=$(realpath -m "$1")
mkdir -p "$dir"/apt/{lists/partial,cache/archives/partial,preferences.d} "$dir/root"
: > "$dir/apt/status"
cat > "$dir/apt/sources.list" <<'EOF'
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main
EOF
apt_opts=(
    -o "Dir::Etc::SourceList=$dir/apt/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=$dir/apt/lists" -o "Dir::Cache=$dir/apt/cache"
    -o "Dir::State::status=$dir/apt/status" -o "Dir::Etc::Preferences=/dev/null"
    -o "Dir::Etc::PreferencesParts=$dir/apt/preferences.d"
    -o "APT::Sandbox::User=root"  # DIR may be private to root (mktemp -d)
)
apt-get "${apt_opts[@]}" update -qq >&2
apt-get "${apt_opts[@]}" install -qq -y --download-only --no-install-recommends \
    -t trixie-backports qemu-system-x86 >&2
for deb in "$dir"/apt/cache/archives/*.deb; do
    dpkg-deb -x "$deb" "$dir/root"
done
root="$dir/root"
cat > "$dir/qemu-system-x86_64" <<EOF
#!/bin/sh
exec "$root/usr/lib64/ld-linux-x86-64.so.2" \\
    --library-path "$root/lib/x86_64-linux-gnu:$root/usr/lib/x86_64-linux-gnu" \\
    "$root/usr/bin/qemu-system-x86_64" -L "$root/usr/share/qemu" "\$@"
EOF
chmod +x "$dir/qemu-system-x86_64"
"$dir/qemu-system-x86_64" --version | head -1 >&2
echo "$dir/qemu-system-x86_64"
