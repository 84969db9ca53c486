"""Read-only questions about FX graphs and module trees; nothing here rewrites a graph.

    regions          the Region record, module paths and stacks, the model's declared block lists
    side_effects     which nodes write in place, what is observable, which order writes impose
    gated_branches   the paper cut's rule: which child modules are gated residual branches
    collectives      the collectives a graph (or each region) issues, for `ts_compile.stats`

The passes (`ts_compile.passes`) ask these questions and do the rewriting.
"""
