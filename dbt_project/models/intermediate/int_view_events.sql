-- One row per view event: each version of a user_article_views row that recorded views
-- (int_view_row_versions, status 'recorded') becomes `views_claimed` events; usually one, more
-- when the app coalesced writes. Numbers continue across the row's lives (views_before_life).
-- Rejected jumps make no events here: they are listed in int_rejected_view_jumps.
-- Reference: newsrec_assets.domain.events.reconstruct_view_events.
-- Views posted to the API (stg_newsapp__api_view_events) are events as they come: rows of their
-- own, never versions of the app's row, so the app's stream writing the same user and article
-- hides none of them. They have no place in the row's numbering: their view_number is null.

with

recording_versions as (

    select * from {{ ref('int_view_row_versions') }}
    where version_status = 'recorded'

),

single_views as (

    select
        recording_versions.*,
        views_before_life + view_count as view_number

    from recording_versions
    where views_claimed = 1

),

coalesced_views as (

    -- Only the rare coalesced writes meet the number table, so the common case stays a plain scan.
    select
        recording_versions.*,
        views_before_life + baseline_count + integers.n as view_number

    from recording_versions
    inner join {{ generate_integers(var('max_views_per_change')) }}
        on integers.n <= recording_versions.views_claimed
    where recording_versions.views_claimed > 1

),

events as (

    select * from single_views
    union all
    select * from coalesced_views

),

app_views as (

    select
        {{ dbt.concat([
            'user_id', "'|'", 'article_id', "'|'",
            'cast(view_number as ' ~ dbt.type_string() ~ ')',
        ]) }} as event_id,
        'app' as event_source,
        user_id,
        article_id,
        view_number,
        last_viewed_at as viewed_at,
        last_impression_id as impression_id,
        views_claimed as views_in_change,
        change_key,
        change_seq,
        changed_at as recorded_at

    from events

),

api_inserts as (

    -- The API writes each event once; should the same event_id come twice, the first counts.
    select
        *,
        row_number() over (partition by event_id order by change_seq) as event_delivery

    from {{ ref('stg_newsapp__api_view_events') }}
    where change_type = 'INSERT'

),

api_views as (

    select
        -- prefixed: `user|article|n` keys of app views can never take the same value
        {{ dbt.concat(["'api|'", 'event_id']) }} as event_id,
        'api' as event_source,
        user_id,
        article_id,
        cast(null as {{ dbt.type_bigint() }}) as view_number,
        viewed_at,
        impression_id,
        cast(1 as {{ dbt.type_bigint() }}) as views_in_change,
        change_key,
        change_seq,
        changed_at as recorded_at

    from api_inserts
    where event_delivery = 1

),

final as (

    select * from app_views
    union all
    select * from api_views

)

select * from final
