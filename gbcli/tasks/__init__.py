"""Pure computations, one module per capability: text and loaded models in, dataclasses of numbers out.

No file parsing, no rendering, no printing. It may import `lm`, `loading`, `terminal` and `gbcli.errors`, never
`cli`, `render`, `warm` or `jobs`. `finite` checks every result for NaN and infinity before a command prints it;
`decoding_options` builds the decoding settings every generating column shares from the command's options.
"""
