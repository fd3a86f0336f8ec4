"""A loopback stand-in for the MTurk requester API (JSON 1.1, as botocore speaks it): enough of
it for HITs to be made and counted across processes. UniqueRequestToken is honoured as MTurk does."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["FakeMTurk"]


class FakeMTurk:
    def __init__(self, balance: str = "10000.00") -> None:
        self.hits: dict[str, dict] = {}
        self.tokens: set[str] = set()
        self.calls: list[str] = []
        lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                operation = self.headers.get("X-Amz-Target", "").rsplit(".", 1)[-1]
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                with lock:
                    fake.calls.append(operation)
                    status, reply = fake.answer(operation, body, balance)
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, operation: str, body: dict, balance: str) -> tuple[int, dict]:
        if operation == "GetAccountBalance":
            return 200, {"AvailableBalance": balance}
        if operation == "CreateHITType":
            return 200, {"HITTypeId": "FAKEHITTYPE"}
        if operation == "CreateHITWithHITType":
            token = body.get("UniqueRequestToken")
            if token in self.tokens:
                return 400, {"__type": "RequestError", "Message": "The HIT with UniqueRequestToken already exists.",
                             "TurkErrorCode": "AWS.MechanicalTurk.HitAlreadyExists"}
            self.tokens.add(token)
            hit_id = f"FAKEHIT{len(self.hits) + 1:06d}"
            now = time.time()
            self.hits[hit_id] = {"HITId": hit_id, "HITTypeId": body["HITTypeId"], "CreationTime": now,
                                 "Expiration": now + body["LifetimeInSeconds"], "HITStatus": "Assignable",
                                 "MaxAssignments": body["MaxAssignments"],
                                 "RequesterAnnotation": body.get("RequesterAnnotation", ""),
                                 "NumberOfAssignmentsAvailable": body["MaxAssignments"],
                                 "NumberOfAssignmentsPending": 0, "NumberOfAssignmentsCompleted": 0}
            return 200, {"HIT": self.hits[hit_id]}
        if operation == "ListHITs":
            return 200, {"NumResults": len(self.hits), "HITs": list(self.hits.values())}
        if operation == "GetHIT":
            return 200, {"HIT": self.hits[body["HITId"]]}
        return 400, {"__type": "RequestError", "Message": f"the stand-in does not answer {operation}"}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
