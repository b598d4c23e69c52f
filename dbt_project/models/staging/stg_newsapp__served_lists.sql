with

source as (

    select * from {{ source('newsapp_raw', 'cdc_served_lists') }}

),

deduplicated as (

    {{ first_delivery_of_each_change('source') }}

),

typed as (

    select
        ---------- change
        {{ cdc_change_columns() | trim }},

        ---------- served list
        impression_id,
        user_id,
        article_ids,
        cast(first_position as {{ dbt.type_int() }}) as first_position,
        cast(shown_at as {{ dbt.type_timestamp() }}) as shown_at,
        variant,

        ---------- lineage
        {{ cdc_lineage_columns() | trim }}

    from deduplicated
    where delivery_number = 1

),

sequenced as (

    select
        *,
        {{ change_seq('changed_at', 'lsn', 'log_file', 'log_position', 'change_type') }} as change_seq

    from typed

)

select * from sequenced
