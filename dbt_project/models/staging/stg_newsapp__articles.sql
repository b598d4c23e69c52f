with

source as (

    select * from {{ source('newsapp_raw', 'cdc_articles') }}

),

deduplicated as (

    {{ first_delivery_of_each_change('source') }}

),

typed as (

    select
        ---------- change
        {{ cdc_change_columns() | trim }},

        ---------- article
        article_id,
        title,
        body,
        category,
        subcategory,
        url,
        status,
        cast(published_at as {{ dbt.type_timestamp() }}) as published_at,
        cast(updated_at as {{ dbt.type_timestamp() }}) as updated_at,

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
