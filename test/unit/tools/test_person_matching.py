"""Near-person matching of the detection gate and recall: one box counts for one person."""

import numpy as np

from airside_perception import classes
from airside_perception.evaluation.gates import lost_persons, person_groups, persons_found
from airside_perception.evaluation.metrics import DetectionMeter, match_centres
from airside_perception.ops.detection import Boxes
from airside_perception.pipelines.tasks import TaskResult
from airside_perception.sim.world import Scan

PERSON = classes.DETECTION_CLASS_NAMES.index("person")


def _box(x, y):
    return [x, y, 0.9, 0.6, 0.6, 1.8, 0.0]


def _scan(persons):
    n = len(persons)
    return Scan(points=np.zeros((0, 4), np.float32), labels=np.zeros(0, np.uint8),
                boxes=np.array([_box(x, y) for x, y in persons], np.float32).reshape(-1, 7),
                box_labels=np.full(n, classes.PERSON, np.uint8), box_points=np.full(n, 40, np.int32),
                occupancy=np.zeros((1, 1), np.uint8), sensor_ids=np.zeros(0, np.uint8), seed=7)


def _result(centres, scores):
    boxes = Boxes(np.array([_box(x, y) for x, y in centres], np.float32).reshape(-1, 7),
                  np.full(len(centres), PERSON, np.int64), np.asarray(scores, np.float32))
    return TaskResult("detection", "t", 1.0, 0.0, 0.0, boxes=boxes)


def test_one_box_between_two_persons_finds_one_of_them():
    pair = _scan([(5.0, 0.0), (5.0, 1.2)])  # 1.2 m apart, a box in the middle is 0.6 m from both
    assert persons_found("detection", pair, _result([(5.0, 0.6)], [0.9]), 0.3) in ({0}, {1})
    assert persons_found("detection", pair, _result([(5.0, 0.1), (5.0, 1.1)], [0.9, 0.8]), 0.3) == {0, 1}
    assert persons_found("detection", pair, _result([(5.0, 0.1), (5.0, 1.1)], [0.9, 0.2]), 0.3) == {0}


def test_the_stronger_box_takes_its_nearest_person_first():
    truth = np.array([[0.0, 0.0], [0.0, 1.0]])
    # the strong box sits on person 1; the weak one, 0.9 m from person 0, is then free to take it
    taken = match_centres(truth, np.array([[0.0, 0.95], [0.0, -0.9]]), np.array([0.9, 0.4]), 1.0)
    assert taken.tolist() == [True, True]
    assert match_centres(truth, np.array([[0.0, 0.5]]), np.array([0.9]), 1.0).sum() == 1
    assert not match_centres(truth, np.array([[3.0, 3.0]]), np.array([0.9]), 1.0).any()
    assert match_centres(np.zeros((0, 2)), np.array([[0.0, 0.0]]), np.array([0.9]), 1.0).shape == (0,)


def test_a_far_person_can_take_the_box_a_near_one_would_share():
    # person 1 stands beyond 20 m; the only box is nearer to it than to the near person 0
    scan = _scan([(19.6, 0.0), (20.5, 0.0)])
    assert persons_found("detection", scan, _result([(20.3, 0.0)], [0.9]), 0.3) == set()
    assert persons_found("detection", scan, _result([(19.7, 0.0)], [0.9]), 0.3) == {0}


def test_near_person_recall_counts_each_box_once():
    meter = DetectionMeter()
    gt = np.array([_box(5.0, 0.0), _box(5.0, 1.2), _box(30.0, 0.0)], np.float32)
    names = ["person"] * 3
    meter.add(gt, names, np.full(3, 40), np.array([_box(5.0, 0.6)], np.float32), ["person"], np.array([0.9]), 0.3)
    summary = meter.summary()
    assert summary["near_persons"] == 2 and summary["person_recall_20m"] == 50.0


def test_persons_group_by_chains_within_twice_the_matching_radius():
    scan = _scan([(5.0, 0.0), (5.0, 1.5), (5.0, 3.0), (5.0, 8.0)])  # a chain of three, one alone
    groups = person_groups(scan)
    assert groups[0] == groups[1] == groups[2] != groups[3]


def test_the_gate_counts_a_group_s_shortfall_not_a_swap_inside_it():
    """Both engines put one box on a close pair: the baseline's is matched to person 0, the
    candidate's to person 1. Not a loss: the candidate finds as many persons there. A candidate
    that finds nobody of the pair loses one; segmentation counts each person as it is."""
    pair = _scan([(5.0, 0.0), (5.0, 0.8), (12.0, 0.0)])
    groups = {(7, i): (7, g) for i, g in person_groups(pair).items()}
    base = {(7, i) for i in persons_found("detection", pair, _result([(5.0, 0.1), (12.0, 0.0)], [0.9, 0.9]), 0.3)}
    swap = {(7, i) for i in persons_found("detection", pair, _result([(5.0, 0.7), (12.0, 0.0)], [0.9, 0.9]), 0.3)}
    assert base == {(7, 0), (7, 2)} and swap == {(7, 1), (7, 2)}
    assert lost_persons("detection", base, swap, groups) == ([], [(7, 0)])
    assert lost_persons("detection", base, {(7, 2)}, groups) == ([(7, 0)], [])
    assert lost_persons("detection", base, {(7, 0), (7, 1)}, groups) == ([(7, 2)], [])  # another group's gain
    assert lost_persons("segmentation", base, swap, groups) == ([(7, 0)], [])
