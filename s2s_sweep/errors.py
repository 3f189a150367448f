"""The user-error family and the table of exit statuses of `python -m s2s_sweep.run`.

A user error is bad input found before any work starts (configuration, dataset, output
store, tracking server, IQA weights, Ray address): one line, exit 2. Anything else raised
is a bug: it keeps its full traceback and exits 70. Problems met after work started are
recorded, not raised: failed images become failed rows, a tracking outage is caught up
on resume, and the end of the run says which of them happened through its status.
"""

import contextlib
import signal
import threading

from model.errors import UserError


class RayUnreachable(UserError, ConnectionError):
    """The Ray address given cannot be reached."""


class NoTrialFinished(Exception):
    """Every trial of a sweep errored or was stopped early: there is no best configuration to save."""


class Terminated(BaseException):
    """SIGTERM (what `ray job stop` sends); a BaseException like KeyboardInterrupt, so no
    `except Exception` on the way swallows it."""


# every user error (model/errors.py), ImageUnusable included: the CLIs answer them in one line, and a
# dataset run's task records them as the image's failed row
USER_ERRORS = (UserError,)

EXIT_OK = 0  # every image denoised and recorded, tracking up to date
EXIT_IMAGES_FAILED = 1  # some images have failed rows (their error column says why)
EXIT_BAD_INPUT = 2  # bad input found before work started; nothing was computed
EXIT_TRACKING_BEHIND = 3  # every image recorded in Parquet + PNGs, MLflow missed some: --resume RUN_ID catches up
# the output store stayed down past --store-patience: finished images saved in --fallback, --resume RUN_ID uploads them
EXIT_STORE_LOST = 4
EXIT_BUG = 70  # an internal error (EX_SOFTWARE): the traceback is printed, please report it
EXIT_INTERRUPTED = 130  # Ctrl-C: records flushed, MLflow run KILLED
EXIT_TERMINATED = 143  # SIGTERM / `ray job stop`: records flushed, MLflow run KILLED

EXIT_STATUSES = f"""exit statuses:
  {EXIT_OK}    every image denoised and recorded
  {EXIT_IMAGES_FAILED}    some images failed (failed rows; rerun them with --resume RUN_ID --retry-failed)
  {EXIT_BAD_INPUT}    bad input found before any work (one line on stderr)
  {EXIT_TRACKING_BEHIND}    MLflow fell behind (Parquet and PNGs are complete); --resume RUN_ID catches it up
  {EXIT_STORE_LOST}    the output store stayed down past --store-patience; what it missed is in --fallback,
       --resume RUN_ID uploads it and goes on
  {EXIT_BUG}   internal error (traceback printed)
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C); {EXIT_TERMINATED} terminated (SIGTERM, ray job stop): records flushed,
       MLflow run KILLED"""


def stop_request(error: BaseException) -> BaseException | None:
    """The Ctrl-C or SIGTERM behind `error`, if any: raised inside a native call (Ray's wait), it
    surfaces wrapped, e.g. as a SystemError whose context is the Terminated exception."""
    while error is not None:
        if isinstance(error, (KeyboardInterrupt, Terminated)):
            return error
        error = error.__cause__ or error.__context__
    return None


def raise_on_sigterm() -> None:
    """Turn SIGTERM into a Terminated exception in the main thread, so `finally` blocks flush."""

    def handler(signum, frame):
        raise Terminated("terminated by SIGTERM")

    signal.signal(signal.SIGTERM, handler)


@contextlib.contextmanager
def stops_held():
    """Hold SIGTERM and SIGINT that arrive inside the block and deliver them as it ends, so a stop
    never cuts a write to a local SQLite tracking store mid-transaction (the database would stay
    locked, and the run's KILLED status could not be written). Main thread only: elsewhere Python
    delivers no signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    for signum in previous:
        signal.signal(signum, lambda signum, frame: arrived.append(signum))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if arrived:
            signal.raise_signal(arrived[0])  # to its own handler again: Terminated, KeyboardInterrupt, or exit
