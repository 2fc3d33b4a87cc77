{#
  Fault injection driven by --vars, so one image can produce every outcome kubedbt must report.
  See README.md for the table of vars and the exit codes they lead to.
#}

{% macro fail_parse_if_requested() %}
  {#- Runs while dbt parses the project (no execute guard), so the invocation stops before any
      node runs: dbt exits 2 and writes no run_results.json. -#}
  {%- if var('fail_parse') -%}
    {{ exceptions.raise_compiler_error("kubedbt fault injection: fail_parse is set") }}
  {%- endif -%}
{% endmacro %}


{% macro fail_model_sql() %}
  {#- A cast the database rejects when the statement runs: the node ends with status "error"
      after dbt has compiled it and sent it to the warehouse. -#}
  {%- if var('fail_model') -%}
    cast('kubedbt fault injection: fail_model is set' as integer)
  {%- else -%}
    0
  {%- endif -%}
{% endmacro %}


{% macro sleep_if_requested() %}
  {#- DuckDB has no sleep function, so wait on the wall clock while the model is compiled at run
      time. This keeps one core busy, which is fine for timeout and kill tests. -#}
  {%- set seconds = var('slow_seconds') | int -%}
  {%- if execute and seconds > 0 -%}
    {%- set deadline = modules.datetime.datetime.now() + modules.datetime.timedelta(seconds=seconds) -%}
    {%- set state = namespace(done=false) -%}
    {#- The sandbox caps range() at 100000, so nest two loops; the deadline ends them early. -#}
    {%- for _ in range(100000) if not state.done -%}
      {%- for _ in range(100000) -%}
        {%- if modules.datetime.datetime.now() >= deadline -%}
          {%- set state.done = true -%}
          {%- break -%}
        {%- endif -%}
      {%- endfor -%}
    {%- endfor -%}
  {%- endif -%}
{% endmacro %}


{% macro memory_hog_sql() %}
  {#- DuckDB only. Builds one list of about memory_hog_mb MiB (a list element costs about 16 bytes).
      DuckDB caps itself at 80% of the memory it sees (the cgroup limit in a pod) and would fail
      with an "Out of Memory Error" instead, so the model raises memory_limit in a pre-hook. -#}
  {%- if var('memory_hog') -%}
    {%- set rows = (var('memory_hog_mb') | int) * 1024 * 1024 // 16 -%}
    (select len(list(i)) from range({{ rows }}) as hog(i))
  {%- else -%}
    0
  {%- endif -%}
{% endmacro %}


{% macro warehouse_sleep_sql() %}
  {#- Postgres only. A statement that keeps the warehouse busy for warehouse_sleep_seconds, as a
      long model would: what a stopped dbt must cancel (it shows in pg_stat_activity until then). -#}
  select pg_sleep({{ var('warehouse_sleep_seconds') | int }})
{% endmacro %}
