"""`sentinel eval`: the simulator and the agent's pipeline in one process, scored against the truth.

- `scoring`: the matching rule and the figures (pure; checked on hand-made alert lists);
- `runner`: scenario runs through `sentinel.pipeline.Pipeline` in simulated time;
- `report`: the rich table, the JSON document and the HTML report with its timeline.
"""
