{#-
  The n-th (1-based, n an SQL expression) item of a space-separated list in a string column;
  null past its end. dbt.split_part needs a literal part number on BigQuery.
-#}
{% macro list_item(column, n) -%}
    {{ return(adapter.dispatch('list_item')(column, n)) }}
{%- endmacro %}

{% macro default__list_item(column, n) -%}
    nullif(split_part({{ column }}, ' ', {{ n }}), '')
{%- endmacro %}

{% macro bigquery__list_item(column, n) -%}
    split({{ column }}, ' ')[safe_ordinal({{ n }})]
{%- endmacro %}


{#- How many items a space-separated list holds (0 for an empty string). -#}
{% macro list_length(column) -%}
    case when {{ column }} = '' then 0
    else {{ dbt.length(column) }} - {{ dbt.length(dbt.replace(column, "' '", "''")) }} + 1 end
{%- endmacro %}
