"""The one exception type whose message is meant for the user (CLI one-liner, HTTP 4xx detail)."""


class HomepageError(Exception):
    """An error caused by input or configuration, with a message that names the culprit."""
