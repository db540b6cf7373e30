"""Which reconstruction a request addresses: reconstructor + output options (query parameters).

`GET /reconstruct/{id}`, `GET /quality/{id}` and `POST /jobs/{id}/cancel?reconstructor=...` take the
same parameters: `reconstructor`, `codec` (h264, vp9, av1), `container` (mp4, webm), and `crf` or
`quality` (high, medium, low). Their combination names one cached output (core.outputs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query

from core.outputs import CODECS, CONTAINERS, QUALITY, InvalidOutput, OutputSpec, output_spec
from core.records import METHOD_PATTERN
from service.deps import ServicesDep, VideoDep
from service.options import InvalidOptions, check_method
from service.problems import Problem

_ENCODABLE: list[str] | None = None


@dataclass(frozen=True)
class Target:
    """One reconstruction of a video: `variant` is its name (storage key, job id, job view key)."""

    reconstructor: str
    output: OutputSpec
    variant: str
    explicit: bool  # a reconstructor or output option was given (not just the defaults)


def encodable_codecs() -> list[str]:
    """Output codecs this installation's PyAV can encode (h264 always; vp9, av1 if built in)."""
    global _ENCODABLE
    if _ENCODABLE is None:
        from framers.outputs import available_codecs  # PyAV only, no model

        _ENCODABLE = available_codecs()
    return _ENCODABLE


def get_target(
    record: VideoDep,
    services: ServicesDep,
    reconstructor: Annotated[
        str | None, Query(pattern=METHOD_PATTERN, description="Default: the one chosen at upload")
    ] = None,
    codec: Annotated[str | None, Query(description=f"Output video codec: {', '.join(CODECS)} (default h264)")] = None,
    container: Annotated[
        str | None, Query(description=f"{', '.join(CONTAINERS)} (default: mp4; webm for vp9)")
    ] = None,
    crf: Annotated[int | None, Query(ge=0, le=63, description="Output quality: lower = better, larger")] = None,
    quality: Annotated[
        str | None, Query(description=f"Instead of crf: {', '.join(QUALITY)} (default high)")
    ] = None,
) -> Target:
    """The addressed reconstruction; 422 `invalid_option` for an unknown reconstructor or options
    that do not go together (H.264 in WebM, crf and quality both, crf out of the codec's range)."""
    name = reconstructor or record.options.reconstructor
    try:
        check_method(services.catalog, "reconstructor", name)
        spec = output_spec(codec, container, crf, quality)
    except InvalidOptions as exc:  # here a query parameter, not a form field
        errors = [{**e, "location": f"query.{e['field']}"} for e in exc.errors or []]
        raise Problem(422, str(exc), "invalid_option", errors=errors or None) from exc
    except InvalidOutput as exc:
        errors = [{"field": exc.field, "location": f"query.{exc.field}", "message": str(exc)}]
        raise Problem(422, str(exc), "invalid_option", errors=errors) from exc
    if spec.codec not in encodable_codecs():
        raise Problem(422, f"this service cannot encode {spec.codec}", "invalid_option")
    explicit = any(v is not None for v in (reconstructor, codec, container, crf, quality))
    return Target(reconstructor=name, output=spec, variant=spec.variant(name), explicit=explicit)


TargetDep = Annotated[Target, Depends(get_target)]
