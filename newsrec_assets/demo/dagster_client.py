"""The few Dagster GraphQL calls `newsrec demo` needs, over plain HTTP (no dagster import).

The supervisor stays small (no dagster, no torch in its process): it asks the webserver which
assets of a job were never materialised, launches the job for those, and follows the run's steps.
"""

from __future__ import annotations

import graphlib
import json
import urllib.error
import urllib.request
from dataclasses import dataclass

REPOSITORY = "__repository__"  # the name Dagster gives a code location's `Definitions`


class DagsterUnavailable(Exception):
    """The webserver did not answer (not up yet, or gone)."""


@dataclass(frozen=True)
class Step:
    key: str
    status: str  # NOT_STARTED, IN_PROGRESS, SUCCESS, FAILURE, SKIPPED
    seconds: float | None


@dataclass(frozen=True)
class RunState:
    run_id: str
    status: str  # QUEUED, STARTING, STARTED, SUCCESS, FAILURE, CANCELED, ...
    steps: list[Step]


class DagsterClient:
    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url, self.timeout_s = url.rstrip("/"), timeout_s

    def query(self, query: str, variables: dict | None = None, timeout_s: float | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", body, {"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s or self.timeout_s) as response:
                answer = json.load(response)
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            raise DagsterUnavailable(str(error)) from error
        if answer.get("errors"):
            raise RuntimeError(f"Dagster GraphQL error: {answer['errors']}")
        return answer["data"]

    def ready(self) -> bool:
        """The webserver answers and has loaded its code locations."""
        try:
            data = self.query(
                "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"
            )
        except DagsterUnavailable:
            return False
        entries = data["workspaceOrError"].get("locationEntries") or []
        return bool(entries) and all(entry["loadStatus"] == "LOADED" for entry in entries)

    def job_steps(self, location: str, job: str) -> list[str]:
        """The job's steps (ops), upstream first."""
        data = self.query(
            """query($selector: PipelineSelector!) {
                 pipelineOrError(params: $selector) {
                   ... on Pipeline { solids { name inputs { dependsOn { solid { name } } } } }
                 }
               }""",
            {"selector": _selector(location, job)},
        )
        graph = {
            solid["name"]: {up["solid"]["name"] for put in solid["inputs"] for up in put["dependsOn"]}
            for solid in data["pipelineOrError"].get("solids") or []
        }
        return list(graphlib.TopologicalSorter(graph).static_order())

    def unmaterialized_assets(self, location: str, job: str) -> list[list[str]]:
        """Asset keys (as paths) of the job that have never been materialised, with the other
        assets of their ops: a multi-asset such as the raw log cannot build part of itself (a
        source table added by an upgrade is new, its siblings are not)."""
        data = self.query(JOB_ASSETS, {"selector": _selector(location, job)})
        return missing_with_op_siblings(data["assetNodes"])

    def unmaterialized(self, asset_keys: list[list[str]]) -> list[list[str]]:
        """Those of `asset_keys` (as paths) never materialised, in any partition."""
        data = self.query(UNMATERIALIZED, {"keys": [{"path": path} for path in asset_keys]})
        return [node["assetKey"]["path"] for node in data["assetNodes"] if not node["assetMaterializations"]]

    def unfinished_run(self, job: str, tag: tuple[str, str]) -> str | None:
        """The id of a run of `job` with `tag` that has not finished, if any."""
        data = self.query(
            """query($filter: RunsFilter!) {
                 runsOrError(filter: $filter, limit: 1) { ... on Runs { results { runId } } }
               }""",
            {
                "filter": {
                    "pipelineName": job,
                    "tags": [{"key": tag[0], "value": tag[1]}],
                    "statuses": ["QUEUED", "STARTING", "STARTED"],
                }
            },
        )
        results = data["runsOrError"].get("results") or []
        return results[0]["runId"] if results else None

    def launch(
        self, location: str, job: str, asset_keys: list[list[str]] | None, tags: dict[str, str]
    ) -> str:
        """Launch `job` (only `asset_keys` of it, if given); returns the run id.

        On a busy machine the webserver can take long to answer a launch: the caller looks for an
        unfinished run (`unfinished_run`) before launching again, so a slow answer never launches twice.
        """
        selector = _selector(location, job)
        if asset_keys is not None:
            selector["assetSelection"] = [{"path": path} for path in asset_keys]
        data = self.query(
            """mutation($params: ExecutionParams!) {
                 launchRun(executionParams: $params) {
                   __typename
                   ... on LaunchRunSuccess { run { runId } }
                   ... on PythonError { message }
                   ... on InvalidSubsetError { message }
                   ... on RunConfigValidationInvalid { errors { message } }
                 }
               }""",
            timeout_s=max(self.timeout_s, 300.0),
            variables={
                "params": {
                    "selector": selector,
                    "runConfigData": {},
                    "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
                }
            },
        )
        result = data["launchRun"]
        if result["__typename"] != "LaunchRunSuccess":
            raise RuntimeError(f"could not launch {job}: {result}")
        return result["run"]["runId"]

    def launch_backfill(self, asset_keys: list[list[str]], tags: dict[str, str]) -> str:
        """Launch an asset backfill of every partition of `asset_keys` (partitioned or not, in
        dependency order: the daemon runs the shards, then what depends on them); returns its id."""
        data = self.query(
            LAUNCH_BACKFILL,
            timeout_s=max(self.timeout_s, 300.0),
            variables={"params": backfill_params(asset_keys, tags)},
        )
        result = data["launchPartitionBackfill"]
        if result["__typename"] != "LaunchBackfillSuccess":
            raise RuntimeError(f"could not launch a backfill of {asset_keys}: {result}")
        return result["backfillId"]

    def run_state(self, run_id: str) -> RunState:
        data = self.query(
            """query($runId: ID!) {
                 runOrError(runId: $runId) {
                   ... on Run { runId status stepStats { stepKey status startTime endTime } }
                 }
               }""",
            {"runId": run_id},
        )
        run = data["runOrError"]
        steps = [
            Step(
                s["stepKey"],
                s["status"] or "IN_PROGRESS",
                (s["endTime"] - s["startTime"]) if s["endTime"] and s["startTime"] else None,
            )
            for s in run.get("stepStats") or []
        ]
        return RunState(run["runId"], run["status"], steps)


JOB_ASSETS = """query($selector: PipelineSelector!) {
  assetNodes(pipeline: $selector) {
    assetKey { path } opNames isMaterializable assetMaterializations(limit: 1) { runId }
  }
}"""


def missing_with_op_siblings(nodes: list[dict]) -> list[list[str]]:
    """The never-materialised assets among `nodes` (`JOB_ASSETS`), with every asset of their ops."""
    nodes = [node for node in nodes if node["isMaterializable"]]
    missing_ops = {op for node in nodes if not node["assetMaterializations"] for op in node["opNames"]}
    return [node["assetKey"]["path"] for node in nodes if missing_ops & set(node["opNames"])]


UNMATERIALIZED = """query($keys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $keys) { assetKey { path } assetMaterializations(limit: 1) { runId } }
}"""
LAUNCH_BACKFILL = """mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}"""


def backfill_params(asset_keys: list[list[str]], tags: dict[str, str]) -> dict:
    return {
        "assetSelection": [{"path": path} for path in asset_keys],
        "allPartitions": True,
        "tags": [{"key": k, "value": v} for k, v in tags.items()],
    }


def _selector(location: str, job: str) -> dict:
    return {"repositoryLocationName": location, "repositoryName": REPOSITORY, "pipelineName": job}
