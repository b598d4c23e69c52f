{#
  A derived table with one column `n` holding 1, 2, ..., upper_bound, built from cross
  joins of a ten-row digit table - portable to every warehouse (no generate_series,
  no arrays, no recursion). Use it as `from {{ generate_integers(100) }}`.
#}
{% macro generate_integers(upper_bound) -%}
    {%- set upper_bound = upper_bound | int -%}
    {%- set positions = [((upper_bound - 1) | string) | length, 1] | max -%}
    (
        select n
        from (
            select
                1
                {%- for position in range(positions) %}
                + {{ 10 ** position }} * digit_{{ position }}.digit
                {%- endfor %} as n
            from
                {%- for position in range(positions) %}
                {% if not loop.first %}cross join {% endif -%}
                (
                    select 0 as digit union all select 1 union all select 2 union all select 3
                    union all select 4 union all select 5 union all select 6 union all select 7
                    union all select 8 union all select 9
                ) as digit_{{ position }}
                {%- endfor %}
        ) as all_integers
        where n <= {{ upper_bound }}
    ) as integers
{%- endmacro %}
