"""The user-error family: bad input, told in one line that names the file or setting, never as
a traceback. Anything else raised is a bug and keeps its traceback.

It lives in model/ because model/ raises some of these itself and must stay a leaf (it imports
nothing of s2s_sweep); s2s_sweep/errors.py maps the family to exit statuses.
"""


class UserError(Exception):
    """Bad input: configuration, dataset, image, output store, tracking server, IQA weights, Ray
    address. Found before work on it started: one line on stderr, exit status 2."""


class ImageUnusable(UserError):
    """One image cannot be denoised as asked (too small, larger than any memory plan fits, a warm
    start's seed of another channel count, a device that is not there). For one image it is bad
    input; in a dataset run it becomes that image's failed row and the rest goes on."""
