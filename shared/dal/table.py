"""Small helpers for DynamoDB update expressions and transaction items."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from shared.dal.aws import to_ddb, to_item


class Update:
    """Builds `SET a = :a, ... REMOVE b ADD c :c` with placeholder names, plus a condition."""

    def __init__(self) -> None:
        self._set: list[str] = []
        self._remove: list[str] = []
        self._add: list[str] = []
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}
        self.condition: str | None = None
        self._n = 0

    def name(self, attr: str) -> str:
        key = f"#{attr}"
        self.names[key] = attr
        return key

    def value(self, v: Any) -> str:
        self._n += 1
        key = f":v{self._n}"
        self.values[key] = to_ddb(v)
        return key

    def set(self, **fields: Any) -> Update:
        for attr, v in fields.items():
            if v is None:
                self._remove.append(self.name(attr))
            else:
                self._set.append(f"{self.name(attr)} = {self.value(v)}")
        return self

    def set_many(self, fields: Mapping[str, Any]) -> Update:
        return self.set(**fields)

    def add(self, **fields: Any) -> Update:
        for attr, v in fields.items():
            self._add.append(f"{self.name(attr)} {self.value(v)}")
        return self

    def when(self, expression: str, **values: Any) -> Update:
        """A condition; `{x}` in the expression is an attribute name, `:x` a value placeholder."""
        for attr in _names_in(expression):
            self.name(attr)
        expr = expression.format(**{a: f"#{a}" for a in _names_in(expression)})
        for k, v in values.items():
            self.values[f":{k}"] = to_ddb(v)
        self.condition = expr if self.condition is None else f"({self.condition}) AND ({expr})"
        return self

    def among(self, attr: str, values: Iterable[str]) -> str:
        """`attr IN (...)` as a fragment of a condition passed to `when` (names and values registered):
        how a named set of statuses becomes part of a condition."""
        keys = []
        for v in sorted(values):
            self._n += 1
            keys.append(f":n{self._n}")
            self.values[keys[-1]] = to_ddb(v)
        return f"{self.name(attr)} IN ({', '.join(keys)})"

    def when_in(self, attr: str, values: Iterable[str]) -> Update:
        """Condition: `attr` holds one of `values`."""
        return self.when(self.among(attr, values))

    def when_not_in(self, attr: str, values: Iterable[str]) -> Update:
        """Condition: `attr` holds none of `values`."""
        return self.when("NOT " + self.among(attr, values))

    def expression(self) -> str:
        parts = []
        if self._set:
            parts.append("SET " + ", ".join(self._set))
        if self._remove:
            parts.append("REMOVE " + ", ".join(self._remove))
        if self._add:
            parts.append("ADD " + ", ".join(self._add))
        return " ".join(parts)

    def kwargs(self, table: str, key: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"TableName": table, "Key": to_item(dict(key)), "UpdateExpression": self.expression()}
        if self.names:
            out["ExpressionAttributeNames"] = self.names
        if self.values:
            out["ExpressionAttributeValues"] = self.values
        if self.condition:
            out["ConditionExpression"] = self.condition
        return out

    def tx(self, table: str, key: Mapping[str, Any]) -> dict[str, Any]:
        return {"Update": self.kwargs(table, key)}

    def tx_check(self, table: str, key: Mapping[str, Any]) -> dict[str, Any]:
        """A transaction item that only checks this update's condition (it writes nothing)."""
        check = self.kwargs(table, key)
        del check["UpdateExpression"]
        return {"ConditionCheck": check}


def _names_in(expression: str) -> Iterable[str]:
    import string

    return [f for _, f, _, _ in string.Formatter().parse(expression) if f]


def transact(items: list[dict[str, Any]]) -> None:
    """Commit TransactWriteItems entries all or nothing. Raises StateConflict, whose `details` lists
    the indexes whose condition failed, when a condition fails."""
    from shared.dal.aws import client
    from shared.dal.vendor_errors import domain_errors

    with domain_errors("transaction not committed: state changed"):
        client("dynamodb").transact_write_items(TransactItems=items)
