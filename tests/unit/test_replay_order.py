"""History order in a replay: a jukebox's decision inputs and a stash's end of epoch."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dataflows.replay_order import EpochStash, PaymentOrder, PaymentPending, PaymentUnscored


def _payment_position(item: object) -> int | None:
    return item[1] if isinstance(item, tuple) and item[0] == "payment" else None


@settings(max_examples=300, deadline=None)
@given(kinds=st.lists(st.sampled_from(["play", "payment", "unscored"]), min_size=1, max_size=30),
       data=st.data())
def test_a_jukebox_is_decided_in_history_order_however_its_payments_come_back(kinds, data):
    # The device step sends plays and payment placeholders in history order; each payment's
    # answer comes through its customer's step, at any time after its placeholder left
    # (different customers: in any order among themselves).
    history = []
    direct, answers = [], []
    for position, kind in enumerate(kinds):
        if kind == "play":
            item = ("play", position)
            history.append(item)
            direct.append(item)
        else:
            direct.append(PaymentPending("jb", position))
            answer = ("payment", position) if kind == "payment" else PaymentUnscored("jb", position)
            history.append(answer)
            answers.append((len(direct), answer))  # may come back once its placeholder was sent
    arrivals: list = []
    pending_answers: list = []
    for sent, item in enumerate(direct, start=1):
        arrivals.append(item)
        pending_answers.extend(answer for after, answer in answers if after == sent)
        while pending_answers and data.draw(st.booleans()):
            arrivals.append(pending_answers.pop(data.draw(st.integers(0, len(pending_answers) - 1))))
    arrivals.extend(data.draw(st.permutations(pending_answers)))

    order = PaymentOrder(_payment_position)
    released = [out for item in arrivals for out in order.arrange(item)]
    assert released == history
    assert not order.waiting


def test_answers_that_come_before_their_placeholder_wait_for_it():
    order = PaymentOrder(_payment_position)
    assert order.arrange(("payment", 3)) == [] and order.waiting
    assert order.arrange(("play", 1)) == [("play", 1)]
    assert order.arrange(PaymentPending("jb", 3)) == [("payment", 3)]
    assert not order.waiting


def test_a_stash_keeps_what_may_still_be_overtaken_and_applies_the_rest_in_order():
    stash = EpochStash(order=lambda item: item)
    stash.add([5, 2, 9, 1])
    applied: list = []
    stash.close(lambda items: applied.extend(items) or [len(items)], keep=lambda item: item >= 5)
    assert applied == [1, 2] and stash.ready() == [2]
    assert stash.due() is not None  # 5 and 9 are still held
    stash.add([3])
    stash.close(lambda items: applied.extend(items) or [])
    assert applied == [1, 2, 3, 5, 9] and stash.due() is None
