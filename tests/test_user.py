"""``_user``: the BetterAuthUser built from verified claims, and where its roles come from."""

from __future__ import annotations

import copy
import logging
import pickle
from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from starlette_betterauth._frozen import FrozenClaims
from starlette_betterauth._user import BetterAuthUser, UserBuilder
from starlette_betterauth.errors import BannedUserError, ConfigurationError, InvalidClaimError

CLAIMS: dict[str, Any] = {
    "sub": "u1",
    "email": "ada@example.com",
    "name": "Ada",
    "role": "user,admin",
    "banned": False,
}


def user(claims: Mapping[str, Any] = CLAIMS, **builder: Any) -> BetterAuthUser:
    return UserBuilder(**builder).build(claims)[0]


def make_user(**changes: Any) -> BetterAuthUser:
    fields: dict[str, Any] = {
        "id": "u1",
        "email": "ada@example.com",
        "name": "Ada",
        "roles": frozenset({"user"}),
        "scopes": frozenset(),
        "claims": {"sub": "u1"},
    }
    return BetterAuthUser(**(fields | changes))


# -- UserBuilder -------------------------------------------------------------------------------


def test_the_user_comes_from_the_claims() -> None:
    built = user()
    assert (built.id, built.email, built.name) == ("u1", "ada@example.com", "Ada")
    assert built.roles == {"user", "admin"}
    assert built.scopes == frozenset()
    assert built.claims == CLAIMS


@pytest.mark.parametrize(
    ("role", "roles"),
    [
        ("admin", {"admin"}),
        ("user,admin", {"user", "admin"}),
        (" user , admin ", {"user", "admin"}),
        ("user,,admin,", {"user", "admin"}),
        ("", set()),
        (["user", " admin ", "", 7], {"user", "admin"}),
        (None, set()),
        (7, set()),
        ({"admin": True}, set()),
    ],
)
def test_roles_come_from_the_comma_separated_role_claim(role: object, roles: set[str]) -> None:
    assert user({"sub": "u1", "role": role}).roles == roles


def test_without_a_role_claim_there_are_no_roles() -> None:
    assert user({"sub": "u1"}).roles == frozenset()


@pytest.mark.parametrize(
    ("claims", "roles"),
    [
        ({"org": {"roles": "owner,member"}}, {"owner", "member"}),
        ({"org": {"roles": ["owner"]}}, {"owner"}),
        ({"org": {}}, set()),
        ({"org": "owner"}, set()),
        ({}, set()),
    ],
)
def test_roles_from_a_dotted_path(claims: dict[str, Any], roles: set[str]) -> None:
    assert user({"sub": "u1", **claims}, roles="org.roles").roles == roles


def test_roles_from_another_claim_name() -> None:
    assert user({"sub": "u1", "groups": "a,b", "role": "c"}, roles="groups").roles == {"a", "b"}


@pytest.mark.parametrize(
    ("found", "roles"),
    [
        (["a", "b"], {"a", "b"}),
        ("a,b", {"a", "b"}),  # a claim handed back as is: two roles, not four characters
        ({"a"}, {"a"}),
        (("a", " b "), {"a", "b"}),
        ((r for r in ["a", "b"]), set()),  # not a string, list, tuple or set: no roles
        ([], set()),
        (None, set()),
        (7, set()),
    ],
)
def test_roles_from_a_callable(found: object, roles: set[str]) -> None:
    def source(claims: Mapping[str, Any]) -> Iterable[str]:
        return found  # type: ignore[return-value]

    assert user(CLAIMS, roles=source).roles == roles


def test_the_callable_receives_the_claims() -> None:
    seen: list[Mapping[str, Any]] = []

    def source(claims: Mapping[str, Any]) -> Iterable[str]:
        seen.append(claims)
        return ["x"]

    user(CLAIMS, roles=source)
    assert seen == [CLAIMS]


def test_a_callable_that_raises_gives_no_roles_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(claims: Mapping[str, Any]) -> Iterable[str]:
        raise KeyError("org")

    with caplog.at_level(logging.ERROR, logger="starlette_betterauth"):
        built = user(CLAIMS, roles=broken)
    assert built.roles == frozenset()
    assert [r.getMessage() for r in caplog.records] == [
        "the roles callable raised; the user gets no roles"
    ]
    assert caplog.records[0].exc_info is not None


@pytest.mark.parametrize("roles", ["", 7, None])
def test_a_role_source_that_is_no_claim_path_or_callable_is_refused(roles: object) -> None:
    with pytest.raises(ConfigurationError) as refused:
        UserBuilder(roles)  # type: ignore[arg-type]
    assert refused.value.message == (
        f"roles must be a claim name, dotted path or callable: {roles!r}"
    )


def test_a_banned_user_is_refused() -> None:
    with pytest.raises(BannedUserError) as refused:
        UserBuilder().build(CLAIMS | {"banned": True})
    assert refused.value.message == "this user is banned"


@pytest.mark.parametrize("banned", [False, None])
def test_only_false_or_null_is_not_banned(banned: object) -> None:
    assert user(CLAIMS | {"banned": banned}).id == "u1"


@pytest.mark.parametrize("banned", ["true", 1, [True], "false"])
def test_anything_else_is_banned(banned: object) -> None:
    with pytest.raises(BannedUserError):
        user(CLAIMS | {"banned": banned})


def test_a_banned_user_is_built_when_allowed() -> None:
    assert user(CLAIMS | {"banned": True}, allow_banned=True).id == "u1"


@pytest.mark.parametrize(
    ("scope", "scopes"),
    [
        ("openid reports:read", {"openid", "reports:read"}),
        ("  openid   reports:read ", {"openid", "reports:read"}),
        ("", set()),
        (["openid", "reports:read"], {"openid", "reports:read"}),
        (None, set()),
        (7, set()),
    ],
)
def test_scopes_come_from_the_space_separated_scope_claim(scope: object, scopes: set[str]) -> None:
    assert user({"sub": "u1", "scope": scope}).scopes == scopes


def test_credentials_are_authenticated_then_roles_then_scopes_sorted() -> None:
    _, credentials = UserBuilder().build({"sub": "u1", "role": "b,a", "scope": "y x"})
    assert credentials == ("authenticated", "role:a", "role:b", "scope:x", "scope:y")


def test_credentials_without_roles_or_scopes() -> None:
    assert UserBuilder().build({"sub": "u1"})[1] == ("authenticated",)


@pytest.mark.parametrize(
    ("claims", "fields"),
    [
        ({"sub": "u1", "email": 7, "name": ["Ada"]}, ("u1", None, None)),
        ({"sub": 42}, ("42", None, None)),
        ({}, ("", None, None)),
    ],
)
def test_fields_of_the_wrong_type_are_none(
    claims: dict[str, Any], fields: tuple[str, str | None, str | None]
) -> None:
    built = user(claims)
    assert (built.id, built.email, built.name) == fields


# -- BetterAuthUser ----------------------------------------------------------------------------


def test_a_user_cannot_be_changed() -> None:
    built = make_user()
    with pytest.raises(AttributeError, match="BetterAuthUser is immutable; cannot set 'roles'"):
        built.roles = frozenset({"admin"})
    with pytest.raises(AttributeError, match="BetterAuthUser is immutable; cannot delete 'id'"):
        del built.id
    with pytest.raises(AttributeError):
        built.extra = 1
    assert built.roles == {"user"}


def test_a_user_is_authenticated_and_identified_by_its_id() -> None:
    built = make_user()
    assert built.is_authenticated is True
    assert built.identity == "u1"


@pytest.mark.parametrize(
    ("name", "email", "shown"),
    [
        ("Ada", "ada@example.com", "Ada"),
        (None, "ada@example.com", "ada@example.com"),
        ("", None, "u1"),
    ],
)
def test_display_name_falls_back_to_email_then_id(
    name: str | None, email: str | None, shown: str
) -> None:
    assert make_user(name=name, email=email).display_name == shown


@pytest.mark.parametrize(("role", "has"), [("user", True), ("admin", False), ("", False)])
def test_has_role(role: str, has: bool) -> None:
    assert make_user().has_role(role) is has


def test_repr_shows_id_email_and_roles_but_no_claims() -> None:
    built = make_user(roles=frozenset({"b", "a"}), claims={"sub": "u1", "secret": "s3cr3t"})
    shown = repr(built)
    assert shown.startswith("BetterAuthUser(id='u1', email='ada@example.com', roles=['a', 'b']")
    assert "s3cr3t" not in shown


def test_claims_nested_too_deeply_are_refused_on_every_python() -> None:
    deep: list[object] = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(InvalidClaimError, match="'deep' claim is nested too deeply"):
        user(CLAIMS | {"deep": deep})


def test_claims_read_like_a_mapping_and_copy_to_plain_dicts() -> None:
    claims = user(CLAIMS | {"org": {"id": "acme"}, "tags": ["a"]}).claims
    assert isinstance(claims, FrozenClaims)
    assert (
        dict(claims) == claims.copy() == claims == CLAIMS | {"org": {"id": "acme"}, "tags": ("a",)}
    )
    assert list(claims) == [*CLAIMS, "org", "tags"]
    assert (claims["sub"], claims.get("missing"), claims.get("missing", 1)) == ("u1", None, 1)
    assert "email" in claims
    assert "missing" not in claims
    assert len(claims) == len(CLAIMS) + 2
    assert type(claims.copy()) is dict
    shallow: object = copy.copy(claims)
    assert type(shallow) is dict
    assert (claims | {"sub": "u2"})["sub"] == "u2"
    assert ({"x": 1} | claims)["x"] == 1
    assert pickle.loads(pickle.dumps(claims)) == claims
    with pytest.raises(TypeError):
        claims["sub"] = "u2"  # type: ignore[index]
    with pytest.raises(TypeError):
        claims["org"]["id"] = "evil"


def test_users_of_one_shape_share_names_and_repeated_values_only() -> None:
    first = user({"sub": "u1", "id": "u1", "iss": "https://a.example", "name": "Ada"}).claims
    second = user({"sub": "u2", "id": "u2", "iss": "https://a.example", "name": "Bob"}).claims
    assert first == {"sub": "u1", "id": "u1", "iss": "https://a.example", "name": "Ada"}
    assert first["iss"] is second["iss"]
    assert first["id"] is first["sub"]
    assert second["id"] == "u2"
    assert (first["name"], second["name"]) == ("Ada", "Bob")
