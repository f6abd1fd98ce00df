"""What the wearer or operator must fix to connect (a wrong password, an unreachable homeserver, ...)."""


class MatrixError(RuntimeError):
    pass
