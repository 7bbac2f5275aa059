"""Operator, evaluator and auditor tokens: short-lived HS256 JWTs through PyJWT.

Verification is pinned to HS256 with the service key; ``alg=none``, any other algorithm
(EdDSA, RS256, ...) and tokens signed with any other key are refused. ``iss``, ``aud``,
``exp``, ``nbf``, ``iat``, ``jti``, ``sub`` and ``role`` are required; ``exp - iat`` may
not exceed the configured maximum lifetime, so a long-lived token is refused even if
its signature is good. Error messages name the failed check, never the token.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from enum import StrEnum

import jwt

from tensorguard.service.errors import AuthenticationError, ServiceConfigError
from tensorguard.service.settings import ServiceSettings

TOKEN_ALGORITHM = "HS256"  # noqa: S105 - an algorithm name, not a secret
REQUIRED_CLAIMS = ("iss", "aud", "exp", "nbf", "iat", "jti", "sub", "role")
MAX_TOKEN_CHARS = 4096


class Role(StrEnum):
    """Who a principal is; edge nodes authenticate with signed requests, not tokens."""

    OPERATOR = "operator"
    EVALUATOR = "evaluator"
    AUDITOR = "auditor"
    EDGE_NODE = "edge-node"


TOKEN_ROLES = frozenset({Role.OPERATOR, Role.EVALUATOR, Role.AUDITOR})


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a token subject or an enrolled edge node."""

    subject: str
    role: Role
    token_id: str | None = None
    expires_at: int | None = None

    @property
    def actor(self) -> str:
        """How the audit log names this principal."""
        return f"{self.role.value}:{self.subject}"


def issue_token(
    settings: ServiceSettings,
    subject: str,
    role: Role,
    *,
    lifetime_s: int = 900,
    now: float | None = None,
) -> str:
    """A signed token for ``subject`` with ``role``, valid for ``lifetime_s`` seconds."""
    if role not in TOKEN_ROLES:
        raise ServiceConfigError(
            f"role {role.value!r} cannot hold a token; use one of "
            f"{', '.join(sorted(r.value for r in TOKEN_ROLES))}"
        )
    if not 0 < lifetime_s <= settings.token_max_lifetime_s:
        raise ServiceConfigError(
            f"token lifetime {lifetime_s} s is outside 1..{settings.token_max_lifetime_s} s "
            "(TG_TOKEN_MAX_LIFETIME_S)"
        )
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": settings.token_issuer,
        "aud": settings.token_audience,
        "sub": subject,
        "role": role.value,
        "iat": issued,
        "nbf": issued,
        "exp": issued + lifetime_s,
        "jti": secrets.token_hex(16),
    }
    return jwt.encode(claims, settings.secret_key.get_secret_value(), algorithm=TOKEN_ALGORITHM)


def verify_token(settings: ServiceSettings, token: str) -> Principal:
    """The principal a token names, or :class:`AuthenticationError` saying which check failed."""
    if not token or len(token) > MAX_TOKEN_CHARS:
        raise AuthenticationError("bearer token missing or too long")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise AuthenticationError("bearer token is not a well-formed JWT") from None
    if header.get("alg") != TOKEN_ALGORITHM:
        raise AuthenticationError(
            f"token algorithm {str(header.get('alg'))[:16]!r} refused; only "
            f"{TOKEN_ALGORITHM} tokens are accepted"
        )
    try:
        claims = jwt.decode(
            token,
            settings.secret_key.get_secret_value(),
            algorithms=[TOKEN_ALGORITHM],
            audience=settings.token_audience,
            issuer=settings.token_issuer,
            leeway=settings.token_leeway_s,
            options={"require": list(REQUIRED_CLAIMS), "strict_aud": True},
        )
    except jwt.ExpiredSignatureError:
        raise AuthenticationError("token expired; request a new one") from None
    except jwt.ImmatureSignatureError:
        raise AuthenticationError("token not valid yet (nbf or iat in the future)") from None
    except jwt.InvalidAudienceError:
        raise AuthenticationError("token audience is not this service") from None
    except jwt.InvalidIssuerError:
        raise AuthenticationError("token issuer is not trusted") from None
    except jwt.MissingRequiredClaimError as exc:
        raise AuthenticationError(f"token lacks the required claim {exc.claim!r}") from None
    except jwt.InvalidSignatureError:
        raise AuthenticationError("token signature does not verify") from None
    except jwt.PyJWTError as exc:
        raise AuthenticationError(f"token refused: {type(exc).__name__}") from None
    return _principal(settings, claims)


def _principal(settings: ServiceSettings, claims: dict[str, object]) -> Principal:
    subject, role, jti = claims["sub"], claims["role"], claims["jti"]
    issued, expires = claims["iat"], claims["exp"]
    if not (isinstance(subject, str) and 0 < len(subject) <= 128):
        raise AuthenticationError("token subject must be a string of 1-128 characters")
    if not (isinstance(jti, str) and 8 <= len(jti) <= 128):
        raise AuthenticationError("token id (jti) must be a string of 8-128 characters")
    if not (isinstance(issued, int) and isinstance(expires, int)):
        raise AuthenticationError("token iat and exp must be integers")
    if expires - issued > settings.token_max_lifetime_s:
        raise AuthenticationError(
            f"token lifetime exceeds {settings.token_max_lifetime_s} s; request a short-lived one"
        )
    try:
        parsed_role = Role(str(role))
    except ValueError:
        raise AuthenticationError("token role is not recognised") from None
    if parsed_role not in TOKEN_ROLES:
        raise AuthenticationError(f"role {parsed_role.value!r} cannot authenticate with a token")
    return Principal(subject=subject, role=parsed_role, token_id=jti, expires_at=expires)
