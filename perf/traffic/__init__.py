"""``python -m perf traffic``: device-independent launch and traffic accounting.

``plan`` (which cases and shapes, and why) -> ``run`` (a worker process per
instrument, with its environment) -> ``worker`` -> ``blocks`` (each provider's
module) + ``step`` (one instrumented step) -> ``count`` (records to a row) ->
``store`` (``perf/results/traffic.csv``). ``budgets`` holds issue 11's
budgets; ``tables``, ``charts`` and ``readme_section`` render the counts;
``cli`` is the command. The instruments themselves: ``perf.accounting``."""
