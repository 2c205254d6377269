"""The command line, ``python -m t2l_core <command>``: one module per group of subcommands.
"""
