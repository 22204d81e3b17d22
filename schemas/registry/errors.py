"""Errors of the embedded schema registry, with Confluent Schema Registry's HTTP statuses and error codes.

Every error the REST API returns is a :class:`ApiError`; the HTTP layer renders it as
``{"error_code": int, "message": str}`` with the matching status, exactly like Confluent's registry, so
``confluent_kafka.schema_registry`` clients raise ``SchemaRegistryError`` with the same ``error_code``.
"""

from __future__ import annotations

SUBJECT_NOT_FOUND = 40401
VERSION_NOT_FOUND = 40402
SCHEMA_NOT_FOUND = 40403
SUBJECT_SOFT_DELETED = 40404
SUBJECT_NOT_SOFT_DELETED = 40405
VERSION_SOFT_DELETED = 40406
VERSION_NOT_SOFT_DELETED = 40407
SUBJECT_COMPATIBILITY_NOT_CONFIGURED = 40408
INCOMPATIBLE_SCHEMA = 409
INVALID_SCHEMA = 42201
INVALID_VERSION = 42202
INVALID_COMPATIBILITY_LEVEL = 42203
INVALID_MODE = 42204
REFERENCE_EXISTS = 42206
STORE_ERROR = 50001


class ApiError(Exception):
    """An error response: HTTP ``status``, registry ``error_code`` and a human-readable ``message``."""

    def __init__(self, status: int, error_code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message

    def body(self) -> dict[str, int | str]:
        """The JSON body Confluent's registry sends for this error."""
        return {"error_code": self.error_code, "message": self.message}


def subject_not_found(subject: str) -> ApiError:
    return ApiError(404, SUBJECT_NOT_FOUND, f"Subject '{subject}' not found.")


def version_not_found(subject: str, version: int | str) -> ApiError:
    return ApiError(404, VERSION_NOT_FOUND, f"Version {version} not found for subject '{subject}'.")


def schema_not_found(detail: str = "Schema not found") -> ApiError:
    return ApiError(404, SCHEMA_NOT_FOUND, detail)


def subject_soft_deleted(subject: str) -> ApiError:
    return ApiError(
        404,
        SUBJECT_SOFT_DELETED,
        f"Subject '{subject}' was soft deleted. Set permanent=true to delete permanently",
    )


def subject_not_soft_deleted(subject: str) -> ApiError:
    return ApiError(
        404,
        SUBJECT_NOT_SOFT_DELETED,
        f"Subject '{subject}' was not deleted first before being permanently deleted",
    )


def version_soft_deleted(subject: str, version: int) -> ApiError:
    return ApiError(
        404,
        VERSION_SOFT_DELETED,
        f"Subject '{subject}' Version {version} was soft deleted. Set permanent=true to delete permanently",
    )


def version_not_soft_deleted(subject: str, version: int) -> ApiError:
    return ApiError(
        404,
        VERSION_NOT_SOFT_DELETED,
        f"Subject '{subject}' Version {version} was not deleted first before being permanently deleted",
    )


def compatibility_not_configured(subject: str) -> ApiError:
    return ApiError(
        404,
        SUBJECT_COMPATIBILITY_NOT_CONFIGURED,
        f"Subject '{subject}' does not have subject-level compatibility configured",
    )


def incompatible(subject: str, reasons: list[str]) -> ApiError:
    return ApiError(
        409,
        INCOMPATIBLE_SCHEMA,
        f'Schema being registered is incompatible with an earlier schema for subject "{subject}", '
        f"details: [{'; '.join(reasons)}]",
    )


def invalid_schema(detail: str) -> ApiError:
    return ApiError(422, INVALID_SCHEMA, f"Invalid schema: {detail}")


def invalid_version(version: str) -> ApiError:
    return ApiError(
        422,
        INVALID_VERSION,
        f"The specified version '{version}' is not a valid version id. "
        'Allowed values are between [1, 2^31-1] and the string "latest"',
    )


def invalid_compatibility_level(level: object) -> ApiError:
    return ApiError(
        422,
        INVALID_COMPATIBILITY_LEVEL,
        f"Invalid compatibility level {level!r}. Valid values are none, backward, forward, full, "
        "backward_transitive, forward_transitive, and full_transitive",
    )


def invalid_mode(mode: object) -> ApiError:
    return ApiError(
        422, INVALID_MODE, f"Invalid mode {mode!r}: the embedded registry supports only READWRITE"
    )


def reference_exists(subject: str, version: int) -> ApiError:
    return ApiError(
        422,
        REFERENCE_EXISTS,
        f"One or more references exist to the schema {{subject={subject}, version={version}}}",
    )


def store_error(detail: str) -> ApiError:
    return ApiError(500, STORE_ERROR, f"Error in the backend data store: {detail}")
