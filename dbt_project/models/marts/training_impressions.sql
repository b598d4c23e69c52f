{{
    config(
        partition_by=(
            {'field': 'shown_at', 'data_type': 'timestamp', 'granularity': 'day'}
            if target.type == 'bigquery' else none
        ),
        cluster_by=(['impression_id'] if target.type == 'bigquery' else none),
    )
}}

-- Real impressions for training and evaluation: one row per article shown in a served list,
-- labelled with whether the user clicked it, split into three disjoint windows by time: the last
-- `test_hours` before as_of are `test` (the gate and every reported metric), the
-- `validation_hours` before those are `validation` (early stopping, model selection), everything
-- earlier is `train`.

with

impressions as (

    select * from {{ ref('int_impressions') }}

),

windows as (

    select
        as_of,
        {{ hours_before('as_of', var('test_hours')) }} as test_start,
        {{ hours_before('as_of', var('test_hours') + var('validation_hours')) }} as validation_start

    from {{ ref('int_as_of') }}

),

final as (

    select
        impressions.impression_id,
        impressions.position,
        impressions.user_id,
        impressions.article_id,
        impressions.shown_at,
        impressions.variant,
        impressions.clicked,
        impressions.first_clicked_at,
        case
            when impressions.shown_at >= windows.test_start then 'test'
            when impressions.shown_at >= windows.validation_start then 'validation'
            else 'train'
        end as split,
        windows.as_of

    from impressions
    cross join windows

)

select * from final
