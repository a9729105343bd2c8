import pytest

from fedhyper.balance import balance


def test_largest_first_to_the_lightest_node() -> None:
    # 8 -> node 0; 7 -> node 1; 5 -> node 1 (7 < 8); 4 -> node 0 (8 < 12); 1 -> node 0 (12 = 12).
    loads = {0: 4.0, 1: 8.0, 2: 5.0, 3: 7.0, 4: 1.0}
    assert balance(loads, 2) == [[0, 1, 4], [2, 3]]


def test_equal_loads_go_round_the_nodes_in_client_order() -> None:
    assert balance(dict.fromkeys(range(5), 1.0), 3) == [[0, 3], [1, 4], [2]]


def test_more_nodes_than_clients_leaves_nodes_idle() -> None:
    assert balance({7: 2.0, 3: 2.0}, 4) == [[3], [7], [], []]


def test_no_node_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one node"):
        balance({0: 1.0}, 0)
