"""The Bokeh side of the calibration page: its figures and tables as one layout, embedded with
:func:`bokeh.embed.json_item` into the page's template and drawn by the BokehJS that Dask's
dashboard already serves (``static/js/bokeh*.min.js``: no CDN, works offline).

The layout is built once per page load from :meth:`Board.meta` (whether the gauges have
coordinates, the parameter names); the page's script then only replaces the ``data`` of the
named ``ColumnDataSource``s below (and a few titles) when the board's version changes, at most
once per iteration.  Names the script relies on start with ``hs-``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["page_item"]

_BLUE, _ORANGE, _GREY, _RED = "#1f77b4", "#ff7f0e", "#7f7f7f", "#c0392b"
_SELECT = ("if (src.selected.indices.length && window.hsSelect) "
           "{ window.hsSelect(src.data.id[src.selected.indices[0]]); }")


def _figure(title: str, name: str, **kw: Any) -> Any:
    from bokeh.plotting import figure

    kw.setdefault("height", 260)
    kw.setdefault("width", 520)
    fig = figure(title=title, name=name, tools="pan,wheel_zoom,box_zoom,reset,save",
                 toolbar_location="above", **kw)
    fig.title.text_font_size = "12px"
    return fig


def _curves() -> list[Any]:
    from bokeh.models import ColumnDataSource, HoverTool

    cols = ("iteration", "loss", "val_loss", "nse_median", "nse_min", "kge_median",
            "val_nse_median", "val_nse_min", "val_kge_median", "lr", "seconds")
    src = ColumnDataSource({k: [] for k in cols}, name="hs-series")
    loss = _figure("Loss per iteration (training, validation)", "hs-loss-fig",
                   y_axis_type="log", x_axis_label="iteration")
    r1 = loss.line("iteration", "loss", source=src, color=_RED, line_width=2,
                   legend_label="training loss")
    loss.scatter("iteration", "loss", source=src, color=_RED, size=3)
    loss.line("iteration", "val_loss", source=src, color=_BLUE, line_width=2,
              line_dash="dashed", legend_label="validation loss")
    loss.add_tools(HoverTool(renderers=[r1], mode="vline", tooltips=[
        ("iteration", "@iteration"), ("loss", "@loss{0.0000e}"),
        ("validation loss", "@val_loss{0.0000e}"), ("learning rate", "@lr{0.0000e}")]))
    loss.legend.location = "top_right"
    loss.legend.click_policy = "hide"
    skill = _figure("Median and minimum NSE and KGE (training solid, validation dashed)",
                    "hs-skill-fig", x_axis_label="iteration")
    lines = [("nse_median", _BLUE, "solid", "NSE median"), ("nse_min", _GREY, "solid",
                                                            "NSE min"),
             ("kge_median", _ORANGE, "solid", "KGE median"),
             ("val_nse_median", _BLUE, "dashed", "val NSE median"),
             ("val_nse_min", _GREY, "dashed", "val NSE min"),
             ("val_kge_median", _ORANGE, "dashed", "val KGE median")]
    rs = [skill.line("iteration", k, source=src, color=c, line_dash=d, line_width=2,
                     legend_label=lab) for k, c, d, lab in lines]
    skill.add_tools(HoverTool(renderers=[rs[0]], mode="vline", tooltips=[
        ("iteration", "@iteration"), ("NSE median / min", "@nse_median{0.000} / "
                                                          "@nse_min{0.000}"),
        ("KGE median", "@kge_median{0.000}"),
        ("val NSE median / min", "@val_nse_median{0.000} / @val_nse_min{0.000}"),
        ("val KGE median", "@val_kge_median{0.000}")]))
    skill.legend.location = "bottom_right"
    skill.legend.click_policy = "hide"
    skill.legend.label_text_font_size = "10px"
    secs = _figure("Seconds per iteration", "hs-seconds-fig", x_axis_label="iteration",
                   height=200)
    secs.line("iteration", "seconds", source=src, color=_GREY, line_width=2)
    secs.add_tools(HoverTool(mode="vline", tooltips=[("iteration", "@iteration"),
                                                     ("seconds", "@seconds{0.000}")]))
    return [loss, skill, secs]


def _table() -> Any:
    from bokeh.models import (
        ColumnDataSource,
        CustomJS,
        DataTable,
        NumberFormatter,
        TableColumn,
    )

    cols = ("id", "index", "nse", "kge", "bias", "val_nse", "val_kge", "val_bias")
    src = ColumnDataSource({k: [] for k in cols}, name="hs-table")
    f3, pct = NumberFormatter(format="0.000", nan_format="-"), \
        NumberFormatter(format="0.0%", nan_format="-")
    columns = [TableColumn(field="id", title="reach id"),
               TableColumn(field="nse", title="NSE", formatter=f3),
               TableColumn(field="kge", title="KGE", formatter=f3),
               TableColumn(field="bias", title="volume bias", formatter=pct),
               TableColumn(field="val_nse", title="val NSE", formatter=f3),
               TableColumn(field="val_kge", title="val KGE", formatter=f3),
               TableColumn(field="val_bias", title="val bias", formatter=pct)]
    table = DataTable(source=src, columns=columns, name="hs-table-view", width=560,
                      height=330, sortable=False, index_position=None, selectable=True)
    src.selected.js_on_change("indices", CustomJS(args={"src": src}, code=_SELECT))
    return table


def _map() -> Any:
    from bokeh.models import (
        ColorBar,
        ColumnDataSource,
        CustomJS,
        HoverTool,
        LinearColorMapper,
        TapTool,
    )
    from bokeh.palettes import RdYlBu11

    src = ColumnDataSource({"id": [], "lat": [], "lon": [], "nse": []}, name="hs-map")
    fig = _figure("Gauges coloured by training NSE", "hs-map-fig", width=520, height=360,
                  x_axis_label="longitude", y_axis_label="latitude", match_aspect=True)
    cmap = LinearColorMapper(palette=list(RdYlBu11)[::-1], low=-1.0, high=1.0,
                             nan_color="#bbbbbb", low_color="#67001f")
    fig.scatter("lon", "lat", source=src, size=8, line_color="#333333", line_width=0.5,
                fill_color={"field": "nse", "transform": cmap})
    fig.add_layout(ColorBar(color_mapper=cmap, title="NSE", width=10), "right")
    fig.add_tools(TapTool(), HoverTool(tooltips=[("reach id", "@id"),
                                                 ("NSE", "@nse{0.000}")]))
    src.selected.js_on_change("indices", CustomJS(args={"src": src}, code=_SELECT))
    return fig


def _hydrograph() -> Any:
    from bokeh.models import BoxAnnotation, ColumnDataSource, HoverTool

    fig = _figure("Hydrograph: click a gauge in the table or on the map", "hs-hydro-fig",
                  width=1060, height=280, x_axis_label="step", y_axis_label="m³/s")
    fig.add_layout(BoxAnnotation(name="hs-hydro-val", left=0, right=0, fill_color="#999999",
                                 fill_alpha=0.15, line_alpha=0))
    fig.add_layout(BoxAnnotation(name="hs-hydro-warm", left=0, right=0,
                                 fill_color="#f1c40f", fill_alpha=0.12, line_alpha=0))
    parts = [("obs", "observed", "black", "solid", 2), ("first", "first guess", _GREY,
                                                        "dashed", 1.5),
             ("cur", "current", _BLUE, "solid", 2)]
    rend = []
    for key, label, color, dash, width in parts:
        src = ColumnDataSource({"step": [], "value": []}, name=f"hs-hydro-{key}")
        rend.append(fig.line("step", "value", source=src, color=color, line_dash=dash,
                             line_width=width, legend_label=label))
    fig.add_tools(HoverTool(renderers=rend, tooltips=[("step", "@step{0}"),
                                                      ("discharge", "@value{0.000}")]))
    fig.legend.location = "top_left"
    fig.legend.click_policy = "hide"
    return fig


def _parameter(j: int, name: str) -> Any:
    from bokeh.models import ColumnDataSource

    src = ColumnDataSource({"left": [], "right": [], "now": [], "first": []},
                           name=f"hs-param-{j}")
    fig = _figure(name, f"hs-param-fig-{j}", width=420, height=230,
                  x_axis_label=name, y_axis_label="reaches")
    fig.quad(left="left", right="right", top="now", bottom=0, source=src, fill_color=_BLUE,
             fill_alpha=0.5, line_color=_BLUE, legend_label="now")
    fig.quad(left="left", right="right", top="first", bottom=0, source=src, fill_alpha=0,
             line_color="black", line_dash="dashed", legend_label="first guess")
    fig.legend.label_text_font_size = "10px"
    fig.legend.location = "top_right"
    return fig


def page_item(meta: dict[str, Any]) -> dict[str, Any]:
    """The page's Bokeh layout as a :func:`bokeh.embed.json_item` (a JSON-able dict) for
    ``meta`` (:meth:`~hydroscale.calibration._board.Board.meta`)."""
    from bokeh.embed import json_item
    from bokeh.layouts import column, row
    from bokeh.models import Div

    loss, skill, secs = _curves()
    middle = [column(Div(text="<b>Per gauge</b> (one page; sort and page above the "
                              "table)", name="hs-table-title"), _table())]
    if meta.get("has_map"):
        middle.append(_map())
    rows = [row(loss, skill), row(*middle), _hydrograph()]
    params = meta.get("params") or []
    if params:
        figs = [_parameter(j, n) for j, n in enumerate(params)]
        rows.append(column(Div(text="<b>Parameters</b>: histogram now (blue) against the "
                                    "first guess (dashed); share at a bound in the title"),
                           row(*figs)))
    rows.append(secs)
    return json_item(column(*rows, name="hs-layout"), "hs-bokeh")
