"""Read a training history and say, in the lesson's words, what went wrong.

The lesson's list: too high a learning rate (valid loss explodes), too low a learning rate
(training loss higher than validation loss), too few epochs (training loss higher than
validation loss), too many epochs (overfitting: the error gets better, then worse), and
"your training loss should never be higher than your validation loss". Each rule below reads
only the recorded numbers (``History``), so each can be shown on a hand-written history.
The thresholds are heuristics, named here so a reader can see and change them.

Train against valid is read off ``train_loss_eval`` when it was recorded: the training loss
measured the way the validation loss is (eval mode, end-of-epoch weights, a fixed sample of
the training set; learner/core.py). The running-mean ``train_loss`` is taken in train mode
(dropout on) while the weights change, so it sits above a valid loss measured at the end:
the demo at 0.28% error was told "training loss 0.061 above validation loss 0.019". The
running mean still shows progress (``_still_falling``, the start/end of the batch losses).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fastcore_cv.learner.recorder import History, centred_median

RISE = 1.2  # train loss ending 20% above where it started: it went up, not down
EXPLODE = 3.0  # valid loss at 3x its best (or 3x the untrained loss): exploded
# The batch loss (a centred median of 5 batches, so one or two odd batches do not count)
# rising to 1.3x the untrained loss: the steps overshoot. AdamW's steps are bounded by the
# LR, so in fit_one_cycle(3) at 100x a good LR (1.02) the digits MLP's loss rose to 1.4x
# (1 thread) or 2.6x (2 threads) that median, then stalled near 1.5 at 62% error without
# exploding; good one-cycle runs (LR 0.01-0.3) never rose above 1.0x.
SPIKE = 1.3
LOW_DROP = 0.10  # train loss fell by less than 10% over the whole run: it barely moved
CLOSE = 0.9  # "train not clearly below valid": train >= 0.9 x valid
FALLING = 0.02  # still falling: last epoch (or last quarter of batches) >= 2% lower
OVERFIT_ERR = 0.01  # error rate must rise by >= 1 point (and >= 10% of its best) ...
OVERFIT_REL = 0.10
OVERFIT_LOSS = 0.05  # ... or, with no error metric, valid loss by >= 5% of its best


@dataclass(frozen=True)
class Finding:
    """One diagnosis: a stable ``code``, a plain-words ``message``, and the numbers behind it."""

    code: str
    message: str
    epoch: int | None = None  # the epoch the finding points at (e.g. the best one)
    evidence: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"

    def _repr_html_(self) -> str:
        from fastcore_cv.display import finding_html

        return finding_html(self.code, self.message, self.epoch)


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def _nonfinite(v: float | None) -> bool:
    return v is not None and not math.isfinite(v)


def _error_series(h: History) -> tuple[str, list[float]] | None:
    """The validation error per epoch: error_rate, or 1 - accuracy, if recorded."""
    for name, conv in (("error_rate", lambda v: v), ("accuracy", lambda v: 1 - v)):
        col = h.column(name)
        if col and all(_finite(v) for v in col):
            return "error rate", [conv(v) for v in col]
    return None


def _train_series(h: History) -> tuple[str, list[float]]:
    """(what it is, per-epoch values): the eval-mode training loss when every epoch has
    one, else the running mean of the batch losses."""
    ev = h.train_eval_losses
    if ev and all(_finite(v) for v in ev):
        return "eval mode, end-of-epoch weights, as the validation loss is measured", ev
    return "running mean over the epoch, in train mode", h.train_losses


def _start_end(h: History) -> tuple[float, float] | None:
    """Train loss at the start and end of the run: means of the first/last 10% of batches."""
    b = np.asarray(h.batch_losses, dtype=np.float64)
    if len(b) >= 4:
        k = max(1, len(b) // 10)
        return float(b[:k].mean()), float(b[-k:].mean())
    if len(h.epochs) >= 2:
        return h.epochs[0].train_loss, h.epochs[-1].train_loss
    return None


def _still_falling(h: History) -> bool:
    t = h.train_losses
    if len(t) >= 2:
        return t[-1] < t[-2] * (1 - FALLING)
    b = np.asarray(h.batch_losses, dtype=np.float64)
    if len(b) < 8:
        return False
    q = len(b) // 4
    return b[-q:].mean() < b[-2 * q : -q].mean() * (1 - FALLING)


ADVICE_LOWER = "Try a learning rate about 10x lower (learn.lr_find() suggests one)."


def _lr_too_high(h: History) -> Finding | None:
    bad_t = next((r for r in h.epochs if not math.isfinite(r.train_loss)), None)
    if h.diverged or bad_t is not None or not all(math.isfinite(v) for v in h.batch_losses):
        ep = bad_t.epoch if bad_t else h.epochs[-1].epoch
        finite = [v for v in h.batch_losses if math.isfinite(v)]
        evidence = {"epoch": float(ep), "batches_before_nan": float(len(finite))}
        if finite:
            evidence["last_finite_batch_loss"] = finite[-1]
        msg = (
            f"The training loss became NaN/inf (epoch {ep}, after {len(finite)} finite batch "
            f"losses): the learning rate is too high and the loss exploded. {ADVICE_LOWER}"
        )
        return Finding("lr_too_high", msg, ep, evidence)
    bad_v = next((r for r in h.epochs if _nonfinite(r.valid_loss)), None)
    if bad_v is not None:
        msg = (
            f"The validation loss became {bad_v.valid_loss} at epoch {bad_v.epoch}: too high "
            f"a learning rate makes the validation loss explode. {ADVICE_LOWER}"
        )
        return Finding("lr_too_high", msg, bad_v.epoch, {"valid_loss": bad_v.valid_loss})
    untrained = h.batch_losses[0] if h.batch_losses else None  # loss before any update
    last_v = h.epochs[-1].valid_loss
    if _finite(untrained) and _finite(last_v) and last_v > EXPLODE * untrained > 0:
        msg = (
            f"The validation loss ({last_v:.4g}) ended far above the loss of the untrained "
            f"model ({untrained:.4g}): the learning rate is so high that the weights were "
            f"thrown somewhere worse than random. {ADVICE_LOWER}"
        )
        evidence = {"untrained_loss": untrained, "last_valid": last_v}
        return Finding("lr_too_high", msg, h.epochs[-1].epoch, evidence)
    spike = _spike(h)
    if spike is not None:
        return spike
    se = _start_end(h)
    if se and se[1] > RISE * se[0]:
        msg = (
            f"The training loss went up instead of down ({se[0]:.4g} -> {se[1]:.4g}): the "
            f"learning rate is too high. {ADVICE_LOWER}"
        )
        return Finding("lr_too_high", msg, evidence={"train_start": se[0], "train_end": se[1]})
    v, t = h.valid_losses, _train_series(h)[1]
    if len(v) >= 2 and all(_finite(x) for x in v):
        best = int(np.argmin(v))
        if v[-1] > EXPLODE * v[best] and t[-1] >= CLOSE * t[best]:
            msg = (
                f"The validation loss exploded from {v[best]:.4g} (epoch {best}) to "
                f"{v[-1]:.4g} while the training loss did not improve: the learning rate is "
                f"too high. {ADVICE_LOWER}"
            )
            return Finding("lr_too_high", msg, best, {"best_valid": v[best], "last_valid": v[-1]})
    return None


def _spike(h: History) -> Finding | None:
    b = np.asarray(h.batch_losses, dtype=np.float64)
    if len(b) < 8 or not b[0] > 0:
        return None
    level = centred_median(b, 5)
    peak = int(np.argmax(level))
    if level[peak] <= SPIKE * b[0]:
        return None
    msg = (
        f"The training loss rose from {b[0]:.4g} (the untrained model) to {level[peak]:.4g} "
        f"around batch {peak} (median of the batches around it): the steps overshoot, the "
        f"learning rate is too high. {ADVICE_LOWER}"
    )
    evidence = {"untrained_loss": float(b[0]), "peak_loss": float(level[peak])}
    evidence["peak_batch"] = float(peak)
    return Finding("lr_too_high", msg, evidence=evidence)


def _lr_too_low(h: History) -> Finding | None:
    se = _start_end(h)
    last = h.epochs[-1]
    if se is None or se[0] <= 0:
        return None
    drop = (se[0] - se[1]) / se[0]
    what, t = _train_series(h)
    if drop >= LOW_DROP or (_finite(last.valid_loss) and t[-1] < CLOSE * last.valid_loss):
        return None
    vs = ""
    if _finite(last.valid_loss):
        vs = (
            f"; the training loss ({t[-1]:.4g}; {what}) is not below the validation loss "
            f"({last.valid_loss:.4g})"
        )
    msg = (
        f"The training loss barely moved ({se[0]:.4g} -> {se[1]:.4g}, {100 * abs(drop):.1f}% "
        f"{'lower' if drop >= 0 else 'higher'}){vs}: the learning rate is probably too low. "
        "Try a higher one "
        "(learn.lr_find() suggests one). If the model was already trained, ignore this."
    )
    evidence = {"train_start": se[0], "train_end": se[1], "drop": drop}
    if _finite(last.valid_loss):
        evidence.update(train_loss=t[-1], valid_loss=last.valid_loss)
    return Finding("lr_too_low", msg, evidence=evidence)


def _too_many_epochs(h: History) -> Finding | None:
    err = _error_series(h)
    what, s = err if err else ("validation loss", h.valid_losses)
    if len(s) < 2 or not all(_finite(v) for v in s):
        return None
    best = int(np.argmin(s))
    tol = max(OVERFIT_ERR, OVERFIT_REL * s[best]) if err else OVERFIT_LOSS * abs(s[best])
    t, v = _train_series(h)[1], h.valid_losses
    if best == len(s) - 1 or s[-1] - s[best] < tol or not t[-1] < t[best]:
        return None
    # An error rate that wobbles while the valid loss keeps falling is noise on a small
    # validation set (one item of 120 is 0.8 points), not overfitting.
    if err and _finite(v[best]) and _finite(v[-1]) and v[-1] <= v[best]:
        return None
    msg = (
        f"The {what} was best at epoch {best} ({s[best]:.4g}) and got worse since "
        f"({s[-1]:.4g} at epoch {len(s) - 1}) while the training loss kept falling: the model "
        "is overfitting, too many epochs. As you overfit, your error gets better and better "
        f"until it starts getting worse. Train for {best + 1} epoch(s) instead, or use "
        "SaveBest/EarlyStopping."
    )
    evidence = {"best": s[best], "last": s[-1], "best_epoch": float(best)}
    evidence.update(train_at_best=t[best], train_last=t[-1])
    return Finding("too_many_epochs", msg, best, evidence)


def _train_above_valid(h: History, explained: bool) -> Finding | None:
    """'too_few_epochs' when train > valid and still falling, else 'train_above_valid'."""
    last = h.epochs[-1]
    what, series = _train_series(h)
    t, v = series[-1], last.valid_loss
    if explained or not _finite(v) or t <= v:
        return None
    evidence = {"train_loss": t, "valid_loss": v}
    if _still_falling(h):
        msg = (
            f"The training loss ({t:.4g}; {what}) is higher than the validation loss ({v:.4g}) and "
            "still falling: too few epochs. Train for longer; your training loss should end "
            "up below your validation loss (dropout or augmentation also raise the training "
            "loss: with them a small gap can remain)."
        )
        return Finding("too_few_epochs", msg, last.epoch, evidence)
    if len(h.epochs) == 1:
        return None  # one epoch: _one_epoch says it
    msg = (
        f"At the end of the run the training loss ({t:.4g}; {what}) is higher than the validation "
        f"loss ({v:.4g}). Your training loss should never be higher than your validation "
        "loss: train longer or with a higher learning rate (strong regularisation such as "
        "dropout or augmentation also raises the training loss)."
    )
    return Finding("train_above_valid", msg, last.epoch, evidence)


def _one_epoch(h: History) -> Finding | None:
    """A single epoch shows no trend: say so (with its numbers), rather than nothing."""
    if len(h.epochs) != 1:
        return None
    row = h.epochs[0]
    what, t = _train_series(h)
    evidence = {"train_loss": t[0]}
    parts = [f"training loss {t[0]:.4g} ({what})"]
    if _finite(row.valid_loss):
        evidence["valid_loss"] = row.valid_loss
        parts.append(f"validation loss {row.valid_loss:.4g}")
    err = _error_series(h)
    if err:
        evidence[err[0].replace(" ", "_")] = err[1][0]
        parts.append(f"{err[0]} {err[1][0]:.4g}")
    msg = (
        f"Only one epoch was trained ({', '.join(parts)}): one epoch is too few to judge "
        "trends. Whether the losses are still falling, or the model has started to "
        "overfit, shows only over several epochs: train for more (e.g. fit_one_cycle(4)) "
        "and read the epoch table again."
    )
    return Finding("one_epoch", msg, 0, evidence)


def diagnose(history: History) -> list[Finding]:
    """All findings for one fit, most fundamental first; an empty list means nothing to report.

    A diverging run reports only 'lr_too_high' (its other numbers mean nothing); a run whose
    loss barely moved does not also get 'too_few_epochs'/'train_above_valid'; a run of one
    epoch gets 'one_epoch' (too few to judge trends) instead of 'train_above_valid'.
    Codes: no_validation, lr_too_high, lr_too_low, too_many_epochs, one_epoch,
    too_few_epochs, train_above_valid. Each finding's ``evidence`` holds its numbers.
    """
    if not history.epochs:
        raise ValueError("history: nothing recorded yet; call fit first")
    findings: list[Finding] = []
    if all(v is None for v in history.valid_losses):
        msg = (
            "There is no validation set, so over- and under-fitting cannot be judged. "
            "Always check models on a validation set."
        )
        findings.append(Finding("no_validation", msg))
    high = _lr_too_high(history)
    if high:
        return Findings([*findings, high])
    low = _lr_too_low(history)
    over = _too_many_epochs(history)
    above = _train_above_valid(history, explained=low is not None)
    one = _one_epoch(history)
    return Findings(findings + [f for f in (low, over, one, above) if f is not None])


class Findings(list):
    """``diagnose``'s answer: a plain list of ``Finding`` that shows as HTML in a notebook."""

    def _repr_html_(self) -> str:
        from fastcore_cv.display import findings_html

        return findings_html(self)
