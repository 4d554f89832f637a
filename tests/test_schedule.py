from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from connector import cdr, schedule
from connector.errors import Malformed
from connector.ratelimit import TokenBucket

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
CADENCE = schedule.Cadence(
    window=timedelta(minutes=5),
    settle=timedelta(minutes=2),
    repoll_after=(timedelta(minutes=10), timedelta(hours=1)),
    first_lookback=timedelta(minutes=30),
)


def test_the_first_checkpoint_starts_the_lookback_ago_on_a_window_boundary() -> None:
    checkpoint = schedule.initial(NOW, CADENCE)
    assert checkpoint.frontier == {0: NOW - timedelta(minutes=35), 1: NOW - timedelta(minutes=35)}


def test_a_window_is_due_only_once_its_end_has_settled() -> None:
    start = NOW - timedelta(minutes=6)
    checkpoint = schedule.Checkpoint({0: start, 1: start})
    assert schedule.next_task(checkpoint, NOW, CADENCE) is None
    assert schedule.wake_at(checkpoint, CADENCE) == NOW + timedelta(minutes=1)
    task = schedule.next_task(checkpoint, NOW + timedelta(minutes=1), CADENCE)
    assert task is not None
    assert task.window == cdr.Window(0, start, start + timedelta(minutes=5))


def test_a_poller_far_behind_catches_up_in_windows_of_at_most_24_hours() -> None:
    start = NOW - timedelta(days=3)
    task = schedule.next_task(schedule.Checkpoint({0: start, 1: NOW}), NOW, CADENCE)
    assert task is not None
    assert task.window.end - task.window.start == timedelta(hours=24)


def test_nothing_older_than_7_days_is_queried_and_the_gap_is_reported() -> None:
    start = NOW - timedelta(days=9)
    task = schedule.next_task(schedule.Checkpoint({0: start, 1: NOW}), NOW, CADENCE)
    assert task is not None
    assert task.window.start == NOW - timedelta(days=7) + schedule.LOOKBACK_MARGIN
    assert task.skipped == task.window.start - start


def test_completing_windows_moves_the_frontier_and_schedules_repolls() -> None:
    start = NOW - timedelta(minutes=20)
    checkpoint = schedule.Checkpoint({0: start, 1: NOW})
    task = schedule.next_task(checkpoint, NOW, CADENCE)
    assert task is not None
    done = schedule.complete(checkpoint, task, NOW, CADENCE)
    assert done.frontier[0] == task.window.end
    assert [(r.window, r.step) for r in done.repolls] == [(task.window, 0)]
    later = NOW + timedelta(hours=2)
    repoll = schedule.next_task(
        schedule.Checkpoint({0: later, 1: later}, done.repolls), later, CADENCE
    )
    assert repoll is not None
    assert repoll.kind == "repoll"
    again = schedule.complete(done, repoll, later, CADENCE)
    assert [r.step for r in again.repolls] == [1]
    last = schedule.Task(repoll.window, again.repolls[0])
    assert schedule.complete(again, last, later, CADENCE).repolls == ()


def test_the_checkpoint_round_trips_through_json() -> None:
    window = cdr.Window(1, NOW - timedelta(minutes=5), NOW)
    checkpoint = schedule.Checkpoint({0: NOW, 1: NOW}, (schedule.Repoll(NOW, window, 1),))
    assert schedule.Checkpoint.from_json(checkpoint.to_json()) == checkpoint


def test_windows_are_limited_to_24_hours_and_both_services() -> None:
    with pytest.raises(ValueError, match="24 hours"):
        cdr.Window(0, NOW - timedelta(hours=25), NOW)
    with pytest.raises(ValueError, match="service"):
        cdr.Window(2, NOW - timedelta(hours=1), NOW)


def test_the_query_form_uses_the_provider_time_zone() -> None:
    window = cdr.Window(1, NOW - timedelta(minutes=5), NOW)
    form = cdr.query_form(window, 2, 100, appkey="a", secretkey="s", zone=ZoneInfo("Asia/Shanghai"))
    assert form == {
        "appkey": "a",
        "secretkey": "s",
        "voiceType": "1",
        "start_time": "2026-11-23 19:55:00",
        "end_time": "2026-11-23 20:00:00",
        "page_size": "100",
        "page": "2",
    }


def test_answers_are_pages_refusals_or_malformed() -> None:
    page = cdr.parse_answer(b'{"code":"1","info":{"total":7,"rows":[{"id":1}]}}')
    assert page == cdr.Page(7, ({"id": 1},))
    assert isinstance(page, cdr.Page)
    assert page.pages(3) == 3
    refusal = cdr.parse_answer(b'{"code":"0","msg":"Illegal IP"}')
    assert refusal == cdr.Refusal("Illegal IP")
    assert isinstance(refusal, cdr.Refusal)
    assert refusal.about_credentials
    assert not cdr.Refusal("request too frequent").about_credentials
    with pytest.raises(Malformed):
        cdr.parse_answer(b"<html>")
    with pytest.raises(Malformed):
        cdr.parse_answer(b'{"code":"2"}')


@pytest.mark.parametrize(
    ("message", "credentials"),
    [
        ("Illegal IP", True),
        ("IP不合法", True),
        ("appkey or secretkey error", True),
        ("invalid key", True),
        ("Unauthorized", True),
        ("签名错误", True),
        ("multiple requests, please slow down", False),
        ("request too frequent", False),
        ("description missing", False),
        ("monkey business: skip", False),
        ("time range cannot exceed 24 hours", False),
        ("", False),
    ],
)
def test_credential_refusals_are_recognised_by_whole_words(message: str, credentials: bool) -> None:
    assert cdr.about_credentials(message) is credentials


async def test_the_token_bucket_spaces_requests_and_honours_holds() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(rate=1.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        await bucket.take()
    assert slept == [1.0, 1.0]
    bucket.hold(5.0)
    await bucket.take()
    assert slept[-1] == 5.0
