"""The one exception type for user mistakes.

A ``UserError`` names the problem and the fix in one line. The CLI turns it into
exit status 2 and that line on stderr; the plugin turns it into a notification.
Anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix: bad file, bad option, unfit checkpoint.

    The message is one line: what is wrong (naming the file or option) and what to do.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class ModalityMismatch(UserError):
    """A mistake that depends on which modality the input was taken to be (no checkpoint
    for it, a checkpoint expecting another, an input that does not look like it).

    Only these get the CLI's hint about a modality guessed from the file name.
    """


class OutOfDistributionWarning(UserWarning):
    """An input looks unlike what the model was trained on (e.g. a CT given as T1)."""
