"""DRF authentication by hashed API token: ``Authorization: Token <secret>`` or ``Bearer <secret>``."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request


class ApiTokenAuthentication(BaseAuthentication):
    keywords = (b"token", b"bearer")
    keyword = "Token"  # the challenge sent with a 401

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        auth = get_authorization_header(request).split()
        if not auth or auth[0].lower() not in self.keywords:
            return None
        if len(auth) == 1:
            raise exceptions.AuthenticationFailed("Invalid token header. No credentials provided.")
        if len(auth) > 2:
            raise exceptions.AuthenticationFailed("Invalid token header. Token string should not contain spaces.")
        try:
            secret = auth[1].decode("ascii")
        except UnicodeError:
            raise exceptions.AuthenticationFailed(
                "Invalid token header. Token string should not contain invalid characters."
            ) from None
        # imported here: DRF loads its authentication classes early, maybe before the models are ready
        from registry.accounts.services import TokenInvalid, token_authenticate

        try:
            token = token_authenticate(secret)
        except TokenInvalid as exc:
            raise exceptions.AuthenticationFailed(str(exc)) from None
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return self.keyword
