"""Queues and workers on the dashboard (issue 13, part 4): each queued run's position in its queue
and an ETA from recorded run times (the median duration of the latest succeeded runs of its
experiment, else of its plugin, times its position, divided by the live workers on its queue); a
GPU request without a live GPU worker said in words; the workers page (workers from their presence
records: queues, hardware, last seen; the queues with their live workers and runs). Constant query
counts."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from registry.dashboard.selectors import duration_text, queue_estimate
from registry.findings.models import Finding
from registry.reproductions.models import Reproduction, Run, WorkerPresence
from tests.dashboard import builders as b
from tests.dashboard.test_live_evidence import fetch
from tests.dashboard.test_query_counts import assert_constant
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def all_readers(readers, owner_client) -> dict[str, Client]:
    return {**readers, "owner": owner_client}


def worker(hostname: str, queues: list[str], *, hardware: str = "cpu", seen_s_ago: float = 10) -> WorkerPresence:
    return WorkerPresence.objects.create(
        hostname=hostname, queues=queues, hardware=hardware, last_seen=timezone.now() - timedelta(seconds=seen_s_ago)
    )


def timed_runs(experiment, durations_s: list[float]) -> None:
    """Succeeded registry runs of ``experiment`` that took these many seconds."""
    reproduction = Reproduction.objects.create(
        experiment=experiment, requested_by=experiment.created_by, seeds=list(range(len(durations_s)))
    )
    end = timezone.now() - timedelta(hours=1)
    Run.objects.bulk_create([
        Run(reproduction=reproduction, seed=i, state=Run.State.SUCCEEDED, progress=1.0,
            started_at=end - timedelta(seconds=i + s), finished_at=end - timedelta(seconds=i))
        for i, s in enumerate(durations_s)
    ])


@pytest.fixture
def busy_queue(user, other_user):
    """Three runs of someone else's finding queued first, then two of ours; two live CPU workers;
    the echo plugin timed at a median of 120 s (runs of another experiment)."""
    worker("celery@cpu-1", ["cpu"])
    worker("celery@cpu-2", ["cpu"])
    elsewhere = b.echo_experiment(b.finding(other_user, title="Ahead"), other_user)
    timed_runs(elsewhere, [60, 120, 180])
    b.queued(elsewhere, 3)
    finding = b.finding(user, title="Behind")
    experiment = b.echo_experiment(finding, user)
    reproduction = b.queued(experiment, 2)
    return finding, experiment, reproduction


def run_row(html: str, run: Run) -> str:
    return html.split(f'data-run-id="{run.pk}"')[1].split("</tr>")[0]


# ---------------------------------------------------------------- positions and ETAs


def test_queued_runs_show_position_and_eta_to_every_reader(all_readers, busy_queue):
    finding, _, reproduction = busy_queue
    fourth, fifth = reproduction.runs.order_by("id")
    for who, client in all_readers.items():
        html = fetch(client, f"/findings/{finding.pk}/").content.decode()
        row = run_row(html, fourth)
        # position 4 (3 runs ahead), ETA 4 × 120 s ÷ 2 workers = 240 s
        assert "Position 4 of 5 in the cpu queue" in row, who
        assert 'data-eta-s="240"' in row and "done in about 4 min" in row
        assert "median run time 2 min over the last 3 succeeded runs of the echo plugin" in row
        assert "2 live workers on the cpu queue" in row
        row = run_row(html, fifth)
        assert "Position 5 of 5" in row and 'data-eta-s="300"' in row and "about 5 min" in row
        fragment = fetch(client, f"/findings/{finding.pk}/runs/").content.decode()
        assert "Position 4 of 5 in the cpu queue" in run_row(fragment, fourth)
        run_page = fetch(client, f"/runs/{fourth.pk}/").content.decode()
        assert "Position 4 of 5 in the cpu queue" in run_page and "done in about 4 min" in run_page


def test_the_experiments_own_run_times_come_first(client, busy_queue):
    finding, experiment, reproduction = busy_queue
    timed_runs(experiment, [30, 30])  # this experiment (its preset) runs in 30 s
    html = client.get(f"/findings/{finding.pk}/").content.decode()
    row = run_row(html, reproduction.runs.order_by("id").first())
    assert 'data-eta-s="60"' in row  # 4 × 30 s ÷ 2
    assert "over the last 2 succeeded runs of this experiment" in row


def test_positions_move_as_runs_ahead_start(client, busy_queue):
    finding, _, reproduction = busy_queue
    Run.objects.filter(reproduction__experiment__finding__title="Ahead", state=Run.State.QUEUED).update(
        state=Run.State.RUNNING
    )
    html = client.get(f"/findings/{finding.pk}/").content.decode()
    first, second = reproduction.runs.order_by("id")
    assert "Position 1 of 2 in the cpu queue" in run_row(html, first)
    assert "Position 2 of 2 in the cpu queue" in run_row(html, second)
    Run.objects.filter(pk=first.pk).update(state=Run.State.RUNNING)
    html = client.get(f"/findings/{finding.pk}/").content.decode()
    assert "queue-estimate" not in run_row(html, first)  # running: no place in the queue
    assert "Position 1 of 1" in run_row(html, second)


def test_no_eta_without_a_timed_run(client, user):
    worker("celery@cpu-1", ["cpu"])
    finding = b.finding(user, title="First ever")
    run = b.queued(b.echo_experiment(finding, user), 1).runs.get()
    row = run_row(client.get(f"/findings/{finding.pk}/").content.decode(), run)
    assert "Position 1 of 1 in the cpu queue" in row
    assert "no ETA yet: no run of this plugin has succeeded to time it" in row and "data-eta-s" not in row


def test_no_live_worker_on_the_queue_is_said_in_words(client, busy_queue):
    finding, _, reproduction = busy_queue
    WorkerPresence.objects.update(last_seen=timezone.now() - timedelta(hours=2))
    run = reproduction.runs.order_by("id").first()
    row = run_row(client.get(f"/findings/{finding.pk}/").content.decode(), run)
    assert "No live worker takes runs from the cpu queue: this run waits until one connects." in row
    assert "data-eta-s" not in row


def test_gpu_request_without_a_gpu_worker_says_so(all_readers, user):
    worker("celery@cpu-1", ["cpu"])  # a CPU worker only
    finding = b.finding(user, title="Needs a GPU")
    experiment = b.echo_experiment(finding, user)
    reproduction = Reproduction.objects.create(experiment=experiment, requested_by=user, seeds=[0], device="gpu")
    run = Run.objects.create(reproduction=reproduction, seed=0, queue="gpu")
    for who, client in all_readers.items():
        html = client.get(f"/findings/{finding.pk}/").content.decode()
        assert "No GPU worker is live: the queued runs of this reproduction wait until one connects" in html, who
        assert "No GPU worker is live: this GPU run waits in the queue until one connects." in run_row(html, run)
        run_page = client.get(f"/runs/{run.pk}/").content.decode()
        assert "No GPU worker is live: this GPU run waits in the queue until one connects." in run_page
        workers_page = client.get("/workers/").content.decode()
        gpu_row = workers_page.split('data-queue="gpu"')[1].split("</tr>")[0]
        assert "No GPU worker is live: runs requested on a GPU wait in the queue until one connects." in gpu_row
        assert "<td>1</td>" in gpu_row  # one queued
    worker("celery@gpu-1", ["gpu"], hardware="NVIDIA H100")
    html = all_readers["anonymous"].get(f"/findings/{finding.pk}/").content.decode()
    assert "No GPU worker is live" not in html
    assert "Position 1 of 1 in the gpu queue" in run_row(html, run)


def test_hidden_findings_runs_are_not_shown_but_counted(all_readers, user):
    worker("celery@cpu-1", ["cpu"])
    third = UserFactory()
    hidden = b.finding(third, title="Secret finding", visibility=Finding.Visibility.RESTRICTED)
    hidden_run = b.queued(b.echo_experiment(hidden, third), 1).runs.get()
    mine = b.finding(user, title="Mine")
    run = b.queued(b.echo_experiment(mine, user), 1).runs.get()
    for who, client in all_readers.items():
        html = client.get(f"/findings/{mine.pk}/").content.decode()
        assert "Position 2 of 2 in the cpu queue" in run_row(html, run), who  # its place is real
        assert "Secret finding" not in html
        assert client.get(f"/runs/{hidden_run.pk}/").status_code == 404
        workers_page = client.get("/workers/")
        assert workers_page.status_code == 200 and b"Secret finding" not in workers_page.content


# ---------------------------------------------------------------- the workers page


def test_workers_page_lists_workers_queues_hardware_and_last_seen(all_readers, user):
    worker("celery@cpu-1", ["cpu"], seen_s_ago=20)
    worker("celery@gpu-1", ["gpu", "cpu"], hardware="NVIDIA H100 80GB HBM3", seen_s_ago=30)
    worker("celery@old", ["cpu"], seen_s_ago=3 * 3600)
    finding = b.finding(user)
    experiment = b.echo_experiment(finding, user)
    b.queued(experiment, 3)
    running = b.queued(experiment, 1, state=Run.State.RUNNING).runs.get()
    Run.objects.filter(pk=running.pk).update(worker_host="gpu-1:4242")
    for who, client in all_readers.items():
        response = fetch(client, "/workers/")
        assert response.status_code == 200, who
        html = response.content.decode()
        gpu = html.split('data-worker="celery@gpu-1"')[1].split("</tr>")[0]
        assert 'data-worker="celery@gpu-1" data-live="true"' in html and ">live</span>" in gpu
        assert "NVIDIA H100 80GB HBM3" in gpu and "<code>gpu</code>, <code>cpu</code>" in gpu
        assert "<td>1</td>" in gpu  # the run running on its machine
        assert '<time datetime="' in gpu and " UTC</time>" in gpu and re.search(r"\((3\d|4\d) s ago\)", gpu)
        assert 'data-worker="celery@old" data-live="false"' in html
        old = html.split('data-worker="celery@old"')[1].split("</tr>")[0]
        assert "not seen recently" in old and "3 h ago" in old
        cpu = html.split('data-queue="cpu"')[1].split("</tr>")[0]
        assert "<td>2 <span" in cpu and "celery@cpu-1, celery@gpu-1" in cpu  # live workers only
        assert "<td>3</td>" in cpu and "<td>1</td>" in cpu  # 3 queued, 1 running
        gpu_queue = html.split('data-queue="gpu"')[1].split("</tr>")[0]
        assert "No GPU worker is live" not in gpu_queue
        assert "2 live of 3 listed" in html
    assert 'aria-current="page">Workers' in all_readers["anonymous"].get("/workers/").content.decode()


def test_workers_page_without_any_worker(client):
    html = client.get("/workers/").content.decode()
    assert "No worker has recorded its presence yet" in html
    assert "No GPU worker is live" in html and "No live worker takes runs from the cpu queue." in html
    assert client.post("/workers/").status_code == 405


# ---------------------------------------------------------------- constant query counts


@pytest.mark.postgres
@pytest.mark.parametrize("who", ["owner", "stranger", "anonymous"])
def test_workers_page_queries_constant(who, all_readers, user):
    finding = b.finding(user)
    experiment = b.echo_experiment(finding, user)
    state = {"i": 0}

    def grow(n: int) -> None:
        for _ in range(n):
            state["i"] += 1
            i = state["i"]
            worker(f"celery@w{i}", ["cpu"] if i % 2 else ["gpu"], seen_s_ago=10 if i % 3 else 7200)
            b.queued(experiment, 2)
            running = b.queued(experiment, 1, state=Run.State.RUNNING).runs.get()
            Run.objects.filter(pk=running.pk).update(worker_host=f"w{i}:1", queue="gpu" if i % 2 else "cpu")

    assert_constant(all_readers[who], "/workers/", grow, items=lambda r: r.content.count(b"data-worker="))


@pytest.mark.postgres
@pytest.mark.parametrize("who", ["owner", "anonymous"])
def test_queued_runs_pages_queries_constant(who, all_readers, user):
    """The runs fragment and the finding page with queued runs in both queues (positions, ETAs
    from timed runs of several experiments and plugins' runs, live workers): constant."""
    worker("celery@cpu-1", ["cpu"])
    finding = b.finding(user, title="Queued")
    state = {"i": 0}

    def grow(n: int) -> None:
        for _ in range(n):
            state["i"] += 1
            experiment = b.echo_experiment(finding, user)
            timed_runs(experiment, [10, 20])
            reproduction = Reproduction.objects.create(
                experiment=experiment, requested_by=UserFactory(), seeds=[0, 1],
                device="gpu" if state["i"] % 2 else "cpu",
            )
            Run.objects.bulk_create([Run(reproduction=reproduction, seed=s, queue=reproduction.device) for s in (0, 1)])

    def items(response) -> int:
        return response.content.count(b'class="small queue-estimate"') // 2

    assert_constant(all_readers[who], f"/findings/{finding.pk}/runs/", grow, items=items)
    assert_constant(all_readers[who], f"/findings/{finding.pk}/", lambda n: grow(n))


@pytest.mark.postgres
def test_queued_run_page_queries_constant(owner_client, user):
    worker("celery@cpu-1", ["cpu"])
    finding = b.finding(user)
    experiment = b.echo_experiment(finding, user)
    run = b.queued(experiment, 1).runs.get()

    def grow(n: int) -> None:
        timed_runs(experiment, [5] * n)
        b.queued(b.echo_experiment(b.finding(user), user), n)
        worker(f"celery@more-{n}", ["cpu"])

    assert_constant(owner_client, f"/runs/{run.pk}/", grow)


# ---------------------------------------------------------------- the estimate itself


def test_queue_estimate_and_durations_in_words():
    estimate = queue_estimate(queue="cpu", position=3, length=7, workers=2, median=(100.0, 5), basis="this experiment")
    assert estimate["eta_s"] == 150.0 and estimate["eta_text"] == "done in about 2 min"
    assert estimate["position_text"] == "position 3 of 7 in the cpu queue"
    assert estimate["basis"] == (
        "median run time 2 min over the last 5 succeeded runs of this experiment; 2 live workers on the cpu queue"
    )
    none = queue_estimate(queue="gpu", position=1, length=1, workers=0, median=(100.0, 5), basis="x")
    assert none["no_worker"] and none["eta_s"] is None and none["eta_text"].startswith("No GPU worker is live")
    untimed = queue_estimate(queue="cpu", position=1, length=1, workers=1, median=None, basis="")
    assert untimed["eta_s"] is None and untimed["eta_text"].startswith("no ETA yet")
    assert [duration_text(s) for s in (0.2, 40, 89, 90, 3599, 5400, 7500)] == [
        "about 1 s", "about 40 s", "about 89 s", "about 2 min", "about 60 min", "about 1 h 30 min", "about 2 h 5 min"
    ]


def test_a_restricted_findings_run_times_never_time_another_findings_run(all_readers, user):
    """The plugin-wide median comes from public findings' runs only: a restricted finding's
    run times (and how many it has) never show on a public finding's queued run."""
    worker("celery@cpu-1", ["cpu"])
    third = UserFactory()
    hidden = b.finding(third, title="Secret finding", visibility=Finding.Visibility.RESTRICTED)
    timed_runs(b.echo_experiment(hidden, third), [600, 600, 600])
    mine = b.finding(user, title="Mine")
    run = b.queued(b.echo_experiment(mine, user), 1).runs.get()
    for who, client in all_readers.items():
        row = run_row(client.get(f"/findings/{mine.pk}/").content.decode(), run)
        assert "Position 1 of 1 in the cpu queue" in row, who
        assert "no ETA yet" in row and "data-eta-s" not in row and "10 min" not in row, who
    public = b.finding(third, title="Public")
    timed_runs(b.echo_experiment(public, third), [60])
    row = run_row(all_readers["stranger"].get(f"/findings/{mine.pk}/").content.decode(), run)
    assert 'data-eta-s="60"' in row and "over the last 1 succeeded run of the echo plugin" in row
