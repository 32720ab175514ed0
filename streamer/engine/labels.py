"""[labels]: which emotions the reading chooses among, and how the model's others are read.

The models score the eight RAVDESS labels. Voices the model never heard (other speakers,
languages, rooms) are read far better when the reading chooses among fewer of them: with
the four that every corpus has (neutral, happy, sad, angry; calm read as neutral), the live
4-class UA of `accurate` on three corpora it never heard rose from 0.36 to 0.52
(docs/streaming_eval.md, "Corpora the model never heard").

:class:`LabelGrouping` maps a probability vector over the model's labels, shape
(n_model_labels,), onto the shown labels, shape (n_shown,): each shown label gets its own
probability plus that of every model label folded into it (``fold``, e.g. calm -> neutral);
model labels neither shown nor folded are dropped and the rest renormalised to sum 1
(uniform when nothing is left). The plan step builds it once per session; every output
(dashboard, JSONL, alerts, server) then sees only the shown labels. The default is the four;
with ``show = "all"`` the grouping is the identity and every label of the model is shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from emostream.errors import ConfigError, InvalidSettingError

ALL = "all"
FOUR: tuple[str, ...] = ("neutral", "happy", "sad", "angry")  # the labels every training corpus has
FOLD: dict[str, str] = {"calm": "neutral"}  # RAVDESS's calm is read as neutral where calm is not shown


@dataclass(frozen=True, kw_only=True)
class LabelsConfig:
    """[labels]: ``show`` the labels the reading chooses among, in the order given (default :data:`FOUR`,
    the four every training corpus has; "all" = every label of the model, in its order; else two or more
    of the model's labels); ``fold`` model label -> the shown label whose probability it adds to when it is
    not shown itself (default calm -> neutral)."""

    show: str | tuple[str, ...] = FOUR
    fold: dict[str, str] = field(default_factory=lambda: dict(FOLD))

    def __post_init__(self) -> None:
        show = self.show
        if isinstance(show, str):
            if show != ALL:
                raise InvalidSettingError(
                    "show", f'is {show!r}; expected "all" or a list of two or more labels, e.g. {list(FOUR)}'
                )
        elif len(show) < 2 or len(set(show)) != len(show):
            raise InvalidSettingError(
                "show", f'is {list(show)}; expected two or more different labels (or "all"), e.g. {list(FOUR)}'
            )
        for source, target in self.fold.items():
            if not isinstance(target, str) or not target:
                raise InvalidSettingError("fold", f"maps {source!r} to {target!r}; expected a label name")
            if target in self.fold:
                raise InvalidSettingError(
                    "fold", f"maps {source!r} to {target!r}, which is folded itself; fold each label into a shown one"
                )


class LabelGrouping:
    """The model's probabilities over ``model_labels`` read as probabilities over the shown labels.

    Built with :meth:`resolve` (which checks the config against the model's labels). ``labels`` is the
    shown labels' tuple; :meth:`apply` maps one vector (n_model_labels,) or a batch (n, n_model_labels)
    to float32 (…, n_shown).
    """

    def __init__(self, model_labels: Sequence[str], labels: Sequence[str], matrix: npt.NDArray[np.float64]) -> None:
        self.model_labels = tuple(model_labels)
        self.labels = tuple(labels)
        self._matrix = matrix  # (n_model_labels, n_shown): 1 where a model label counts for a shown one
        self.identity = self.labels == self.model_labels

    @classmethod
    def resolve(cls, cfg: LabelsConfig, model_labels: Sequence[str], model_name: str = "the model") -> LabelGrouping:
        """The grouping ``cfg`` asks for on a model scoring ``model_labels``; ConfigError for a label it lacks."""
        model_labels = tuple(model_labels)
        if isinstance(cfg.show, str):
            return cls(model_labels, model_labels, np.eye(len(model_labels)))
        shown = tuple(cfg.show)
        unknown = [label for label in shown if label not in model_labels]
        if unknown:
            raise ConfigError(
                f"[labels] show names {unknown}, which {model_name} does not score; its labels: "
                f'{", ".join(model_labels)}. Fix [labels] show (or --labels), or use "all"'
            )
        matrix = np.zeros((len(model_labels), len(shown)), dtype=np.float64)
        for i, label in enumerate(model_labels):
            target = label if label in shown else cfg.fold.get(label)
            if target in shown:
                matrix[i, shown.index(target)] = 1.0
        return cls(model_labels, shown, matrix)

    @property
    def dropped(self) -> tuple[str, ...]:
        """Model labels that count for no shown label."""
        return tuple(label for label, row in zip(self.model_labels, self._matrix, strict=True) if not row.any())

    @property
    def folded(self) -> dict[str, str]:
        """Model label -> the other shown label it is read as."""
        out = {}
        for label, row in zip(self.model_labels, self._matrix, strict=True):
            if row.any() and label not in self.labels:
                out[label] = self.labels[int(np.argmax(row))]
        return out

    def apply(self, probs: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Probabilities over the shown labels, float32, shape (..., n_shown), each row summing to 1."""
        p = np.asarray(probs)
        if p.shape[-1] != len(self.model_labels):
            raise ValueError(f"probabilities of shape {p.shape}; expected (..., {len(self.model_labels)})")
        if self.identity:  # every label shown: the model's float32 probabilities as they are
            return np.asarray(p, dtype=np.float32)
        sums = p.astype(np.float64) @ self._matrix
        total = sums.sum(axis=-1, keepdims=True)
        uniform = np.full_like(sums, 1.0 / len(self.labels))
        out = np.divide(sums, total, out=uniform, where=total > 0)
        return out.astype(np.float32)
