"""A bounded in-memory ConsultationStore (least recently used evicted). Not durable: a restart
forgets consultations. It stands in until the Postgres store replaces it."""

from __future__ import annotations

from collections import OrderedDict

from utimesh.consult.v1 import consult_pb2 as cpb


class MemoryConsultationStore:
    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, cpb.Consultation] = OrderedDict()

    async def put(self, consultation: cpb.Consultation) -> None:
        self._items[consultation.name] = consultation
        self._items.move_to_end(consultation.name)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    async def get_by_request_id(self, request_id: str) -> cpb.Consultation | None:
        if not request_id:
            return None
        return next((c for c in reversed(self._items.values()) if c.request_id == request_id), None)

    async def get(self, name: str) -> cpb.Consultation | None:
        item = self._items.get(name)
        if item is not None:
            self._items.move_to_end(name)
        return item
