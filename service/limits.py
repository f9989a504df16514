"""The configurable request limits; each refusal names the limit's variable and its value."""

from __future__ import annotations

from collections.abc import Sequence

from service.errors import LimitExceeded
from service.settings import Settings


class Limits:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def check_inputs(self, texts: Sequence[str], field: str = "inputs") -> None:
        self._check_count(len(texts), self.settings.max_inputs, "GRAFT_MAX_INPUTS", field, "inputs")
        self._check_text_lengths(texts, field)

    def check_examples(
        self, texts: Sequence[str], labels: Sequence[str], field: str = "examples"
    ) -> None:
        self._check_count(
            len(texts), self.settings.max_examples, "GRAFT_MAX_EXAMPLES", field, "examples"
        )
        self._check_count(
            len(set(labels)), self.settings.max_labels, "GRAFT_MAX_LABELS", field, "distinct labels"
        )
        self._check_text_lengths(texts, field, suffix=".text")

    @staticmethod
    def _check_count(count: int, limit: int, name: str, field: str, what: str) -> None:
        if count > limit:
            raise LimitExceeded(
                f"{count} {what} in one call; the limit ({name}) is {limit}",
                limit=name,
                value=limit,
                field=field,
            )

    def _check_text_lengths(self, texts: Sequence[str], field: str, suffix: str = "") -> None:
        limit = self.settings.max_text_chars
        for index, text in enumerate(texts):
            if len(text) > limit:
                raise LimitExceeded(
                    f"text {index} has {len(text)} characters; the limit "
                    f"(GRAFT_MAX_TEXT_CHARS) is {limit}",
                    limit="GRAFT_MAX_TEXT_CHARS",
                    value=limit,
                    field=f"{field}.{index}{suffix}",
                )
