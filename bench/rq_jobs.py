"""The trivial job RQ runs in the comparator (importable by RQ's worker processes)."""


def noop(number: int) -> int:
    return number
