"""Building blocks of job-file schemas: sections that refuse unknown keys, and fields whose problems read as job-file
messages ("expected an integer, got 1.5", "expected one of adam, adamw, sgd, got 'rmsprop'").

Each also says what it accepts in the JSON Schema of the job file (daemon/kinds/job_schemas.py): `one_of` as an
`enum`, `rule` through the keywords it is given (`minimum=1` ...), so a host can check a job before it sends it.

A problem raised with `problem()` carries the pydantic error type PROBLEM; `validate_job` prints it as
`key.path: message`, the key path being where pydantic met it and the message as written here (it names the value
itself). A validator that finds several problems raises `Problems`, each at its own key path below the validator's.
"""
from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Callable

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

PROBLEM = "seisd"  # the pydantic error type of our own messages


class Section(BaseModel):
    """A section of a job file: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")


def problem(message: str) -> PydanticCustomError:
    """A validation error whose message is shown as written."""
    return PydanticCustomError(PROBLEM, "{message}", {"message": message})


def problems_error(title: str, problems: list[tuple[tuple[str | int, ...], str]]) -> ValidationError:
    """Several problems of one validator, each (key path below the validator's place, message), raised as one
    error: pydantic files each under its own key path."""
    return ValidationError.from_exception_data(title, [
        InitErrorDetails(type=problem(message), loc=loc, input=None) for loc, message in problems])


@dataclasses.dataclass(frozen=True)
class _Before(BeforeValidator):
    """A BeforeValidator that also adds `schema` to the field's JSON Schema."""

    schema: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __get_pydantic_json_schema__(self, core: Any, handler: Any) -> dict[str, Any]:
        return {**handler(core), **self.schema}


@dataclasses.dataclass(frozen=True)
class _After(AfterValidator):
    """An AfterValidator that also adds `schema` to the field's JSON Schema."""

    schema: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __get_pydantic_json_schema__(self, core: Any, handler: Any) -> dict[str, Any]:
        return {**handler(core), **self.schema}


def _typed(test: Callable[[Any], bool], expected: str) -> BeforeValidator:
    def check(value: Any) -> Any:
        if test(value):
            return value
        raise problem(f"expected {expected}, got {value!r}")
    return BeforeValidator(check)


# Exact types, as a job file means them: no "3" for 3, no 1.5 for an integer, no 1 for true.
Int = Annotated[int, _typed(lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer")]
Number = Annotated[float, _typed(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number")]
Flag = Annotated[bool, _typed(lambda v: isinstance(v, bool), "true or false")]
Text = Annotated[str, _typed(lambda v: isinstance(v, str), "a string")]


def one_of(*choices: str) -> BeforeValidator:
    """A value among `choices`: `name: Annotated[str, one_of("adam", "sgd")] = "adam"`."""
    def check(value: Any) -> Any:
        if isinstance(value, str) and value in choices:
            return value
        raise problem(f"expected one of {', '.join(choices)}, got {value!r}")
    return _Before(check, schema={"enum": list(choices)})


def rule(test: Callable[[Any], bool], message: str, **schema: Any) -> AfterValidator:
    """A condition on a typed value; `message` may show the value as {value}; `schema` is the same condition in
    JSON Schema keywords, for the job file's schema: `Annotated[Int, rule(lambda v: v >= 1, "expected >= 1, got
    {value}", minimum=1)]`."""
    def check(value: Any) -> Any:
        if test(value):
            return value
        raise problem(message.format(value=value))
    return _After(check, schema=schema)
