"""A tiny module the demo agent reads and summarizes."""


def greet(name: str) -> str:
    return f"hello, {name}"


def add(a: int, b: int) -> int:
    return a + b
