"""validate_or_raise names the bad fields without repeating their values anywhere."""

from __future__ import annotations

import traceback

import pytest
from pydantic import BaseModel, ConfigDict

from tensorguard.gate.errors import GatePolicyError, validate_or_raise

SECRET = "hunter2-do-not-print"


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    port: int
    password: str


def test_refusal_names_the_field_and_hides_the_value_in_the_whole_traceback() -> None:
    with pytest.raises(GatePolicyError) as caught:
        validate_or_raise(
            _Settings,
            {"port": SECRET, "password": SECRET},
            GatePolicyError,
            "settings are invalid",
            "Fix the file.",
        )
    error = caught.value
    assert str(error).startswith("settings are invalid: port")
    assert str(error).endswith("Fix the file.")
    rendered = "".join(traceback.format_exception(error))
    assert SECRET not in rendered
    assert error.__cause__ is None
