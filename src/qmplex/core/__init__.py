"""The sans-I/O core: framing (lines out of a byte stream), the QMP protocol state
machine, and the values it returns.

Nothing in this package touches a socket, a clock or a thread, or calls anyone back:
bytes go in, values come out (see :mod:`qmplex.core.protocol`).
"""
