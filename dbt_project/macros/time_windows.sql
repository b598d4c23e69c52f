{#
  Time arithmetic that returns a timestamp on every warehouse. dbt.dateadd returns a
  DATETIME on BigQuery, which does not compare with TIMESTAMP columns, hence the cast.
#}
{% macro hours_before(timestamp_expression, hours) -%}
    cast({{ dbt.dateadd('hour', -1 * (hours | int), timestamp_expression) }} as {{ dbt.type_timestamp() }})
{%- endmacro %}

{#- Fractional hours from `start_expression` to `end_expression` (second resolution). -#}
{% macro hours_between(start_expression, end_expression) -%}
    (cast({{ dbt.datediff(start_expression, end_expression, 'second') }} as {{ dbt.type_float() }}) / 3600.0)
{%- endmacro %}
