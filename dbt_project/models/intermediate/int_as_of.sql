-- The time the data reflects: the latest event time anywhere in it (view, exposure or CMS
-- change). Time windows and splits are measured back from here instead of from the wall clock,
-- so a rebuild on the same data gives the same tables.

with

event_times as (

    select max(viewed_at) as event_at from {{ ref('int_view_events') }}
    union all
    select max(shown_at) as event_at from {{ ref('int_impressions') }}
    union all
    select max(valid_from) as event_at from {{ ref('int_article_versions') }}

),

final as (

    select max(event_at) as as_of
    from event_times

)

select * from final
