"""GAIN's segmentation table from stored columns: save / load round trip and the command line."""

import json

import pytest
import torch

from guidewidgets.gain import reproduce, segment
from guidewidgets.gain.tables import saved


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    result = reproduce.run("smoke", test_seed=reproduce.DEV_SEED, seed=2, keep_models=True, log=lambda _: None)
    return result, reproduce.save_models(result, folder)


def test_stored_columns_load_back_with_their_scores_and_weights(stored):
    result, folder = stored
    back = reproduce.load_models(folder)
    assert back["seed"] == 2 and back["design"] == result["design"] and back["columns"] == result["columns"]
    for name, model in result["models"].items():
        state = back["models"][name].state_dict()
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
        assert not back["models"][name].training
    with pytest.raises(ValueError, match="holds no run.json; give a seed-S folder"):
        reproduce.load_models(folder.parent)


def test_the_command_line_adds_the_rows_to_a_saved_run(stored, tmp_path, capsys):
    result, folder = stored
    into = tmp_path / "runs.json"
    into.write_text(json.dumps([saved(result, None)]))
    assert segment.main([str(folder), "--train", "32", "--test", "32", "--epochs", "1", "--into", str(into)]) == 0
    rows = json.loads(into.read_text())[0]["segmentation"]
    assert set(rows) == {*result["columns"], "true masks"}
    assert rows["true masks"]["label_miou"] == pytest.approx(1.0)
    assert all(0.0 <= r["miou"] <= 1.0 for r in rows.values())
    assert "over training seeds 2" in capsys.readouterr().out
    without = segment.segmentation_table(reproduce.load_models(folder), train=32, test=32, epochs=1, truth=False)
    assert "true masks" not in without  # the same segmenter, seed and scenes give the same scores
    assert [without["GAIN"][k] for k in ("miou", "label_miou")] == [rows["GAIN"][k] for k in ("miou", "label_miou")]
