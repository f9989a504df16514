"""The configurable request limits; each refusal names the limit's variable and its value."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from adapters.scope import OUT_OF_SCOPE
from service.errors import LimitExceeded
from service.settings import Settings

#: A tuned or matching head's token states (one float32 row per token, padded to the longest
#: input) are held in memory while it trains: 262,144 of them are 400 MB at the backbone's 384
#: dimensions, and at most 200 MB of float16 in its stored training set (both databases cap a
#: value at 1 GB).
MAX_TUNED_PADDED_TOKENS = 262_144


class Limits:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def check_inputs(self, texts: Sequence[Any], field: str = "inputs") -> None:
        self._check_count(len(texts), self.settings.max_inputs, "GRAFT_MAX_INPUTS", field, "inputs")
        self._check_text_lengths(texts, field)

    def check_examples(
        self, texts: Sequence[Any], labels: Sequence[Any], field: str = "examples"
    ) -> None:
        self.check_training_set(len(texts), labels, field)
        self._check_text_lengths(texts, field, suffix=".text")

    def check_descriptions(self, descriptions: Mapping[str, str]) -> None:
        limit = self.settings.max_text_chars
        for label, text in descriptions.items():
            if len(text) > limit:
                raise LimitExceeded(
                    f"the description of {label!r} has {len(text)} characters; the limit "
                    f"(GRAFT_MAX_TEXT_CHARS) is {limit}",
                    limit="GRAFT_MAX_TEXT_CHARS",
                    value=limit,
                    field=f"label_descriptions.{label}",
                )

    def check_training_set(
        self, n_examples: int, labels: Sequence[Any], field: str, *, with_base: bool = False
    ) -> None:
        """Examples and distinct labels (a multilabel example's tuple counts each label)."""
        whose = ", the base version's and these," if with_base else ""
        self._check_count(
            n_examples, self.settings.max_examples, "GRAFT_MAX_EXAMPLES", field, f"examples{whose}"
        )
        distinct = {
            one for label in labels for one in (label if isinstance(label, tuple) else (label,))
        }
        distinct.discard(OUT_OF_SCOPE)  # "none of these" is no label
        self._check_count(
            len(distinct),
            self.settings.max_labels,
            "GRAFT_MAX_LABELS",
            field,
            f"distinct labels{whose}",
        )

    @staticmethod
    def check_token_states(n_inputs: int, longest: int, field: str) -> None:
        """A tuned or matching head's inputs, padded to the longest, must fit
        ``MAX_TUNED_PADDED_TOKENS``."""
        padded = n_inputs * longest
        if padded > MAX_TUNED_PADDED_TOKENS:
            raise LimitExceeded(
                f"{n_inputs} inputs padded to {longest} tokens make {padded} token states; a "
                f"tuned or matching head takes at most {MAX_TUNED_PADDED_TOKENS} (shorter texts, "
                "fewer examples, or a frozen-feature kind such as linear)",
                limit="tuned_padded_tokens",
                value=MAX_TUNED_PADDED_TOKENS,
                field=field,
            )

    @staticmethod
    def _check_count(count: int, limit: int, name: str, field: str, what: str) -> None:
        if count > limit:
            raise LimitExceeded(
                f"{count} {what} in one call; the limit ({name}) is {limit}",
                limit=name,
                value=limit,
                field=field,
            )

    def _check_text_lengths(self, texts: Sequence[Any], field: str, suffix: str = "") -> None:
        limit = self.settings.max_text_chars
        for index, text in enumerate(texts):
            # Images have their own limits, checked as they are decoded (service.images).
            if isinstance(text, str) and len(text) > limit:
                raise LimitExceeded(
                    f"text {index} has {len(text)} characters; the limit "
                    f"(GRAFT_MAX_TEXT_CHARS) is {limit}",
                    limit="GRAFT_MAX_TEXT_CHARS",
                    value=limit,
                    field=f"{field}.{index}{suffix}",
                )
