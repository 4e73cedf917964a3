"""The method catalog: one row for every registered method and a method for every row, in
``methods()`` order, with unique orders and valid families; each method's texts are its row's; a
name without a row, or texts given in part, is refused with a sentence that names the fix."""

import dataclasses

import pytest
import torch

from guidewidgets import explain as E
from guidewidgets.explain import catalog, registry
from guidewidgets.explain.cam_base import cam_method, gradient_cam

TEXTS = ("order", "name", "title", "family", "reference", "summary")


def test_every_registered_method_has_a_row():
    missing = [m for m in E.methods() if m not in catalog.CATALOG]
    assert not missing, f"registered without a row in guidewidgets/explain/catalog.py: {missing}"


def test_every_row_is_a_registered_method():
    unregistered = [name for name in catalog.CATALOG if name not in E.methods()]
    assert not unregistered, (
        f"rows in guidewidgets/explain/catalog.py with no method (module not imported?): {unregistered}"
    )


def test_rows_stand_in_methods_order_with_unique_names_orders_and_valid_families():
    rows = [catalog.Entry(*row) for row in catalog._ROWS]
    names = [r.name for r in rows]
    orders = [r.order for r in rows]
    assert len(set(names)) == len(names), "a name has two rows"
    assert len(set(orders)) == len(orders), "two rows share an order (the widget's keys would depend on import order)"
    assert orders == sorted(orders), "the table is not in methods() order"
    assert names == E.methods()
    assert {r.family for r in rows} <= set(catalog.FAMILIES)
    assert all(r.title and r.reference and r.summary for r in rows)


@pytest.mark.parametrize("name", E.methods())
def test_a_methods_info_is_its_row_plus_the_codes_flags(name):
    info = E.method_info(name)
    assert tuple(getattr(info, f) for f in TEXTS) == dataclasses.astuple(catalog.describe(name))


def test_describe_refuses_an_unknown_name_naming_the_file_to_add_it_to():
    with pytest.raises(ValueError, match=r"'grad-cma' has no row.*'grad-cam'.*guidewidgets/explain/catalog\.py"):
        catalog.describe("grad-cma")
    with pytest.raises(TypeError, match="str"):
        catalog.describe(20)  # type: ignore[arg-type]


def test_a_decorator_without_a_row_or_with_part_of_the_texts_is_refused():
    before = E.methods()

    def own(c: registry.Call) -> torch.Tensor:
        return c.x[:, 0]

    with pytest.raises(ValueError, match=r"'no-row' has no row.*catalog\.py"):
        registry.method("no-row")(own)
    with pytest.raises(TypeError, match=r"title, family, reference, summary and order="):
        registry.method("half", "Half", "gradient", order=5)(own)
    with pytest.raises(TypeError, match=r"title, reference, summary and order="):
        gradient_cam("half-cam", "Half-CAM", "a test", "x")  # no order=
    with pytest.raises(ValueError, match="family must be one of"):
        registry.method("odd", "Odd", "colour", "a test", "x", order=5)(own)
    with pytest.raises(ValueError, match=r"'saliency' is a 'gradient' method.*registers 'cam'"):
        cam_method("saliency")
    assert E.methods() == before  # nothing was registered


def test_a_method_outside_the_catalog_gives_its_texts(monkeypatch):
    monkeypatch.setattr(registry, "_INFO", dict(registry._INFO))
    monkeypatch.setattr(registry, "_FUNCS", dict(registry._FUNCS))

    @registry.method("outside", "Outside", "perturbation", "a test", "what it shows", order=9999, signed=True)
    def outside(c: registry.Call) -> torch.Tensor:
        return c.x[:, 0]

    info = E.method_info("outside")
    assert (info.title, info.family, info.reference, info.summary, info.order) == (
        "Outside",
        "perturbation",
        "a test",
        "what it shows",
        9999,
    )
    assert info.signed and E.methods()[-1] == "outside"
    assert "outside" not in catalog.CATALOG
