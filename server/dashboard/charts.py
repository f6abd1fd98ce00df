"""The dashboard's figures, made with Plotly from a snapshot: the page only hands them to plotly.js."""

from __future__ import annotations

import json

import plotly.graph_objects as go
from plotly.subplots import make_subplots

LAYOUT = dict(margin=dict(l=50, r=20, t=40, b=40), height=300, template="plotly_white",
              legend=dict(orientation="h", y=-0.25))
ROLE_COLOURS = {"promoted": "#2a9d8f", "canary": "#e9c46a", "earlier": "#8d99ae", "withdrawn": "#e76f51",
                "rejected": "#d62828"}


def figures(doc: dict) -> dict[str, dict]:
    """Plotly JSON (data + layout) per chart, by the id of the element the page draws it in."""
    made = {"chart-rounds": rounds_figure(doc["rounds"]), "chart-privacy": privacy_figure(doc),
            "chart-upload": upload_figure(doc["rounds"]), "chart-versions": versions_figure(doc["versions"])}
    return {name: json.loads(figure.to_json()) for name, figure in made.items()}


def rounds_figure(rounds: list[dict]) -> go.Figure:
    """Training loss, and the quality gate's ROUGE-L and faithfulness of each round's candidate."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("mean local training loss", "candidate quality (gate)"),
                        specs=[[{}, {"secondary_y": True}]])
    x = [r["round"] for r in rounds]
    fig.add_trace(go.Scatter(x=x, y=[r.get("train_loss") for r in rounds], mode="lines+markers", name="loss"),
                  row=1, col=1)
    gated = [r for r in rounds if r.get("gate") and r["gate"].get("candidate")]
    fig.add_trace(go.Scatter(
        x=[r["round"] for r in gated], y=[r["gate"]["candidate"]["rouge_l"] for r in gated],
        mode="lines+markers", name="ROUGE-L",
        marker=dict(symbol=["circle" if r["gate"]["passed"] else "x" for r in gated], size=10)), row=1, col=2)
    fig.add_trace(go.Scatter(
        x=[r["round"] for r in gated], y=[100 * r["gate"]["candidate"]["faithful_rate"] for r in gated],
        mode="lines+markers", name="faithful %", line=dict(dash="dot")), row=1, col=2, secondary_y=True)
    fig.update_xaxes(title_text="round", dtick=1)
    fig.update_yaxes(title_text="ROUGE-L", row=1, col=2)
    fig.update_yaxes(title_text="faithful %", row=1, col=2, secondary_y=True, range=[0, 105])
    return fig.update_layout(**LAYOUT)


def privacy_figure(doc: dict) -> go.Figure:
    """ε spent after each round against the budget; rounds without DP are marked, not drawn as a number."""
    rounds, privacy = doc["rounds"], doc["privacy"]
    fig = go.Figure(go.Scatter(x=[r["round"] for r in rounds], y=[r.get("epsilon") for r in rounds],
                               mode="lines+markers", name="ε spent", connectgaps=False))
    fig.add_hline(y=privacy["budget"], line_dash="dash", line_color="#d62828",
                  annotation_text=f"budget ε = {privacy['budget']:g}")
    if privacy["rounds_without_dp"]:
        fig.add_trace(go.Scatter(x=privacy["rounds_without_dp"], y=[0] * len(privacy["rounds_without_dp"]),
                                 mode="markers", name="no DP (ε = ∞)", marker=dict(symbol="x", size=10,
                                                                                   color="#d62828")))
    delta = privacy["delta"]
    fig.update_layout(title=f"privacy spent (δ = {delta:g})" if delta else "privacy spent", xaxis_title="round",
                      yaxis_title="ε", xaxis_dtick=1, **LAYOUT)
    return fig


def upload_figure(rounds: list[dict]) -> go.Figure:
    """Devices per round (aggregated, failed, rejected) and the upload each one sent."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("devices per round", "upload per device (kB)"))
    x = [r["round"] for r in rounds]
    for key, name in (("clients", "aggregated"), ("failures", "failed"), ("rejected", "rejected")):
        fig.add_trace(go.Bar(x=x, y=[r[key] for r in rounds], name=name), row=1, col=1)
    fig.add_trace(go.Bar(x=x, y=[r["upload_bytes_per_client"] / 1e3 for r in rounds], name="upload",
                         showlegend=False), row=1, col=2)
    fig.update_xaxes(title_text="round", dtick=1)
    return fig.update_layout(barmode="stack", **LAYOUT)


def versions_figure(versions: list[dict]) -> go.Figure:
    """Every version by when it was written, coloured by what it is now (promoted, canary, rejected, ...)."""
    fig = go.Figure()
    for role, colour in ROLE_COLOURS.items():
        mine = [v for v in versions if v["role"] == role]
        if mine:
            fig.add_trace(go.Scatter(
                x=[v["created"] for v in mine], y=[v["version"] for v in mine], mode="markers", name=role,
                marker=dict(size=12, color=colour),
                text=[_version_text(v) for v in mine], hovertemplate="%{text}<extra></extra>"))
    fig.update_layout(title="version timeline", xaxis_title="written", yaxis_title="version", yaxis_dtick=1,
                      **LAYOUT)
    return fig


def _version_text(v: dict) -> str:
    text = f"v{v['version']} (round {v['round']})"
    if v["rolled_back_to"] is not None:
        text += f", a copy of v{v['rolled_back_to']}"
    candidate = (v.get("gate") or {}).get("candidate")
    if candidate:
        text += f"<br>ROUGE-L {candidate['rouge_l']:.1f}, faithful {100 * candidate['faithful_rate']:.0f}%"
    return text
