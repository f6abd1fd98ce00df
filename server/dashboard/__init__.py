"""The operator's console: `tidings federation dashboard`, a local web app over the operator's state.

    snapshot.py  the state directory read into one JSON document: rounds, versions and their gate figures and
                 signatures, the rollout and the health devices report, the devices, privacy spent, actions
    charts.py    Plotly figures of that document (loss and quality per round, ε, upload, version timeline)
    actions.py   what the operator may change from the page (promote, roll back, revoke), each one logged
    app.py       the FastAPI app: the page, its JSON endpoints, the token, and `serve`
    static/      the page (HTML, CSS and the script that polls the snapshot and draws the figures)
"""
