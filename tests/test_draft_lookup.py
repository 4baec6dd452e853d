"""Prompt-lookup drafts: the tokens that followed the latest earlier occurrence of the row's longest matching
suffix (3, 2 or 1 tokens), worked by hand."""

from llamabench.backends.hf.draft_lookup import DraftLookup


def test_a_repeating_phrase_drafts_its_continuation_running_on_into_its_own_guesses():
    # (5, 6, 7) ends at position 5 and at position 2; positions 3, 4, 5 follow, then the guess itself.
    assert DraftLookup([5, 6, 7, 5, 6, 7]).draft(4) == [5, 6, 7, 5]


def test_the_longest_matching_suffix_wins_over_a_later_shorter_one():
    # (1, 2, 3) occurred at 0-2, followed by 9; the single token 3 occurred later, at 5, followed by 8.
    assert DraftLookup([1, 2, 3, 9, 4, 3, 8, 1, 2, 3]).draft(3) == [9, 4, 3]


def test_the_latest_occurrence_wins_among_equal_lengths():
    # 7 at positions 0 and 2 (4 is the query): the one at 2 is followed by 2, 7, then the guess's own 2.
    assert DraftLookup([7, 1, 7, 2, 7]).draft(3) == [2, 7, 2]


def test_extending_indexes_the_new_tokens():
    lookup = DraftLookup([1, 2, 3, 4])
    assert lookup.draft(4) == []  # 4 never occurred before
    lookup.extend([2])
    assert lookup.draft(3) == [3, 4, 2]
    lookup.extend([9, 3])
    assert lookup.draft(2) == [4, 2]  # (9, 3) and (2, 9, 3) are new; 3 at position 2 is followed by 4


def test_acceptance_counts_confirmed_tokens_against_drafts_cut_short():
    lookup = DraftLookup([1])
    assert lookup.acceptance == 0.5  # no evidence: one success and one failure assumed
    lookup.record(offered=4, accepted=4)
    lookup.record(offered=4, accepted=1)
    lookup.record(offered=0, accepted=0)
    assert lookup.acceptance == (5 + 1) / (5 + 1 + 2)
