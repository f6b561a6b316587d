"""Durable steps: one conditional write per completed step, only while its claim holds.

A step's record goes into the item's `steps` map under its name, conditional on the
claim (`status = PROCESSING AND claim_token = :token`) and on the name being unrecorded,
so a dead or superseded claim can record nothing, and a step is recorded at most once.
"""

from __future__ import annotations

from typing import Any

from runner.errors import StepNotRecorded, TaskConflict
from runner.items import serialize
from runner.model import StepRecord, Task, TaskStatus
from runner.store.base import StoreBase, old_item

S = TaskStatus


class StepWrites(StoreBase):
    """The steps map's one write: record a completed step under the current claim."""

    def record_step(
        self,
        task: Task,
        name: str,
        record: StepRecord,
        *,
        steps_exist: bool,
        offloaded: bool = False,
    ) -> None:
        """SET steps.<name> (or the whole map, when the item has none yet) while the
        claim `task.claim_token` holds; `offloaded` also marks the item as having
        payload objects. Raises StepNotRecorded if the claim no longer holds and the
        item holds no such record (an earlier try of this write that applied is
        recognised in the conflict's old image, whatever happened to the claim since)."""
        stored = record.model_dump(mode="json")
        names = {"#status": "status", "#steps": "steps", "#claim_token": "claim_token"}
        values: dict[str, Any] = {":processing": S.PROCESSING.value, ":token": task.claim_token}
        condition = "#status = :processing AND #claim_token = :token"
        if steps_exist:
            names["#step"] = name
            values[":step"] = stored
            expression = "SET #steps.#step = :step"
            condition += " AND attribute_not_exists(#steps.#step)"
        else:
            values[":steps"] = {name: stored}
            expression = "SET #steps = :steps"
            condition += " AND attribute_not_exists(#steps)"
        if offloaded:
            names["#payloads"] = "payloads"
            values[":true"] = True
            expression += ", #payloads = :true"
        try:
            self._call(
                "update_item",
                TableName=self.table_name,
                Key=serialize({"id": task.id}),
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=serialize(values),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except TaskConflict as exc:
            old = old_item(exc)
            if old is not None and old.steps is not None and old.steps.get(name) == record:
                # Recorded by an earlier try whose reply was lost, while the claim held
                # (a takeover since does not undo it: the record, and its object, stay)
                return
            raise StepNotRecorded(
                f"task {task.id}: step {name!r} not recorded, claim {task.attempts} no longer"
                " holds (lease taken over, or the task changed)"
            ) from exc
