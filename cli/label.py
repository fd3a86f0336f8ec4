"""`imgnet label …`: crowd labeling in rounds (submit, collect, run), gold, status."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from imgnet_build.cli.common import given, json_option, pass_workspace, print_json, setting_help
from imgnet_build.cli.label_web import invite_command, revoke_command, serve_command
from imgnet_build.labeling import rounds
from imgnet_build.labeling.rounds import LabelSettings
from imgnet_build.labeling.simulated import Crowd
from imgnet_build.workspace import Workspace

CROWD = Crowd()
F = TypeVar("F", bound=Callable[..., Any])


@click.group()
def label() -> None:
    """Crowd labeling: which of these images show the category?

    \b
    Example:
        imgnet label run --backend simulated && imgnet label status
    """


for _web_command in (serve_command, invite_command, revoke_command):  # the local backend's web app
    label.add_command(_web_command)


def _with(options: list[Callable[[F], F]]) -> Callable[[F], F]:
    """A decorator applying `options` in the order written (written once, shared below)."""

    def apply(command: F) -> F:
        for option in reversed(options):
            command = option(command)
        return command

    return apply


consensus_options = _with([  # how many votes a pair gets and how they become labels
        click.option("--votes", type=click.IntRange(1),
                     help=setting_help("label", "votes", "Votes every new pair gets (the baseline).")),
        click.option("--max-votes", type=click.IntRange(1),
                     help=setting_help("label", "max_votes", "Most votes a pair may get before it stays undecided.")),
        click.option("--method", type=click.Choice(["dynamic", "dawid-skene", "majority"]),
                     help=setting_help("label", "method", "Consensus method.")),
        click.option("--accept", type=click.FloatRange(0, 1, min_open=True, max_open=True),
                     help=setting_help("label", "accept", "Posterior at which a pair is accepted.")),
        click.option("--reject", type=click.FloatRange(0, 1, min_open=True, max_open=True),
                     help=setting_help("label", "reject", "Posterior at which a pair is rejected.")),
        click.option("--block-below", type=click.FloatRange(0, 1),
                     help=setting_help("label", "block_below", "Block workers whose whole 95% interval of balanced "
                                       "accuracy is lower (no information).")),
        click.option("--prefer-above", type=click.FloatRange(0, 1),
                     help=setting_help("label", "prefer_above", "Set aside workers surely under this while 2 x "
                                       "--max-votes workers are estimated above it.")),
        click.option("--include-test", is_flag=True, default=None,
                     help="Count test answers (MTurk sandbox) as evidence; their labels are marked as not human "
                          "and exported only with --include-simulated."),
])

task_options = _with([
        click.option("--images-per-task", type=click.IntRange(2, 500),
                     help=setting_help("label", "images_per_task", "Images in one task, controls included.")),
        click.option("--controls", type=click.IntRange(0),
                     help=setting_help("label", "controls", "Controls per task (half positive, half negative when there are positives).")),
        click.option("--category", "categories", multiple=True, metavar="SYNSET",
                     help="Only this category (wnid or nltk name); repeatable."),
])

simulated_options = _with([  # defaults: the simulated crowd's own (labeling/simulated.py Crowd)
        click.option("--sim-workers", type=click.IntRange(1),
                     help=f"Simulated crowd: number of workers.  [default: {CROWD.workers}]"),
        click.option("--sim-accuracy", metavar="LO-HI", help="Simulated crowd: each worker's accuracy, drawn "
                     f"uniformly.  [default: {CROWD.accuracy[0]:g}-{CROWD.accuracy[1]:g}]"),
        click.option("--sim-spammers", type=click.FloatRange(0, 1),
                     help=f"Simulated crowd: share of workers who answer at random.  [default: {CROWD.spammers:g}]"),
        click.option("--sim-constant", type=click.FloatRange(0, 1),
                     help=f"Simulated crowd: share of workers who answer no to everything.  [default: {CROWD.constant:g}]"),
        click.option("--sim-seed", type=int, help=f"Simulated crowd: random seed.  [default: {CROWD.seed}]"),
])


def _settings(workspace: Workspace, **values: Any) -> LabelSettings:
    """The options given, over imgnet.toml's [label] table, over LabelSettings' defaults."""
    settings = given(values, set(LabelSettings.__dataclass_fields__))
    settings["categories"] = tuple(values.get("categories") or ())
    return workspace.settings.stages.make("label", **settings)


def _sim_options(values: dict) -> dict:
    return given(values, {"sim_workers", "sim_accuracy", "sim_spammers", "sim_seed", "sim_constant"})


live_option = click.option("--live", is_flag=True,
                           help="(mturk) The real marketplace, real money; needs --max-cost. Default: the sandbox.")
live_work_option = click.option("--live", is_flag=True,
                                help="(mturk) HITs on the real marketplace. Default: the sandbox's.")


@label.command()
@click.option("--backend", type=click.Choice(["local", "simulated", "mturk"]), required=True,
              help="Where the tasks go.")
@consensus_options
@task_options
@simulated_options
@live_option
@click.option("--max-cost", type=click.FloatRange(0), default=None, metavar="USD",
              help="(mturk) Refuse to let this workspace's spending (spent, committed and this submit) pass USD.")
@click.option("--dry-run", is_flag=True, help="Print the plan (and for mturk its price); make no task, no call.")
@json_option
@pass_workspace
def submit(workspace: Workspace, backend: str, live: bool, max_cost: float | None, dry_run: bool, as_json: bool,
           **values: Any) -> None:
    """Issue the tasks needed now: three votes for new pairs, more for undecided ones.

    Running it again issues only what is still missing. With --backend mturk the tasks
    become HITs on the MTurk sandbox, or with --live --max-cost USD on the real marketplace.

    Example:

    \b
        imgnet label submit --backend local --votes 3 --images-per-task 48 --controls 6
        imgnet label submit --backend mturk --dry-run
    """
    from decimal import Decimal

    cap = None if max_cost is None else Decimal(str(max_cost)).quantize(Decimal("0.01"))
    options = _sim_options(values) if backend != "mturk" else None
    plan = rounds.submit(workspace, backend, _settings(workspace, **values), dry_run=dry_run, options=options,
                         live=live, max_cost=cap)
    print_json(plan.as_dict()) if as_json else click.echo(plan.summary())


@label.command()
@consensus_options
@live_work_option
@json_option
@pass_workspace
def collect(workspace: Workspace, live: bool, as_json: bool, **values: Any) -> None:
    """Bring answers in and decide the labels that the votes allow.

    MTurk assignments are stored, then approved or rejected by their controls; HITs on the
    real marketplace are collected only with --live.

    Example:

    \b
        imgnet label collect --method dynamic
    """
    result = rounds.collect(workspace, _settings(workspace, **values), options={"live": live})
    print_json(result.as_dict()) if as_json else click.echo(result.summary())


@label.command("run")
@click.option("--backend", type=click.Choice(["simulated"]), default="simulated", show_default=True,
              help="A backend that answers by itself.")
@consensus_options
@task_options
@simulated_options
@json_option
@pass_workspace
def run_command(workspace: Workspace, backend: str, as_json: bool, **values: Any) -> None:
    """Submit and collect in rounds until every pair is decided or out of votes.

    Votes and labels of the simulated crowd are marked simulated everywhere.

    Example:

    \b
        imgnet label run --backend simulated --sim-workers 60 --sim-accuracy 0.6-0.95
    """
    say = None if as_json else click.echo
    result = rounds.run(workspace, backend, _settings(workspace, **values), options=_sim_options(values), say=say)
    print_json(result.as_dict()) if as_json else click.echo(result.summary())


@label.command()
@click.option("--backend", type=click.Choice(["local", "simulated", "mturk"]), default=None,
              help="Only this backend's tasks; default: every backend.")
@click.option("--batch", default=None, help="Only this batch (as label status shows it, e.g. r2); default: all.")
@live_work_option
@json_option
@pass_workspace
def expire(workspace: Workspace, backend: str | None, batch: str | None, live: bool, as_json: bool) -> None:
    """Stop open tasks on any backend; answers already in are kept.

    MTurk's submitted answers are collected first and its HITs expire on the marketplace;
    local and simulated tasks close at once (a late submission is refused).

    Example:

    \b
        imgnet label expire --backend local
        imgnet label expire --batch r2
    """
    result = rounds.expire(workspace, backend, batch, live=live)
    print_json(result.as_dict()) if as_json else click.echo(result.summary())


@label.command()
@click.argument("path", type=click.Path(dir_okay=False), metavar="FILE.csv")
@json_option
@pass_workspace
def gold(workspace: Workspace, path: str, as_json: bool) -> None:
    """Load known answers (columns url or sha256, wnid, answer) to use as controls.

    Example:

    \b
        imgnet label gold gold.csv
    """
    from imgnet_build.labeling.gold import load_gold

    result = load_gold(workspace, path)
    print_json(result.as_dict()) if as_json else click.echo(result.summary())


@label.command("status")
@click.option("--all", "all_workers", is_flag=True, help="List every worker (default: the first 10).")
@json_option
@pass_workspace(read_only=True)
def status_command(workspace: Workspace, all_workers: bool, as_json: bool) -> None:
    """Labels per category, votes waiting for a decision, workers, tasks and cost.

    Example:

    \b
        imgnet label status --all
    """
    from imgnet_build.labeling.status import label_status

    report = label_status(workspace)
    print_json(report.as_dict()) if as_json else click.echo(report.summary(all_workers=all_workers))
