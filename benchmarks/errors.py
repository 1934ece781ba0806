"""The one exception type for bad input; the CLI prints it as one line, exit status 2."""


class UsageError(ValueError):
    """Bad input (config, data, arguments): the message names the value and what is accepted."""
