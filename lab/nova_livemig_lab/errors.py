"""The one exception the lab raises for a step that cannot go on."""


class LabError(Exception):
    """A lab step failed; the message says what is missing and what to do."""
