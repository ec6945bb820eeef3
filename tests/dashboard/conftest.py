"""Readers of the dashboard pages shared by its tests."""

import pytest
from django.test import Client


@pytest.fixture
def stranger(other_user) -> Client:
    client = Client()
    client.force_login(other_user)
    return client


@pytest.fixture
def readers(client, stranger) -> dict[str, Client]:
    """An anonymous visitor and a signed-in user who is not an author."""
    return {"anonymous": client, "stranger": stranger}
