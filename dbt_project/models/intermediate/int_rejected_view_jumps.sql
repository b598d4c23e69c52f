-- Versions of a user_article_views row whose view_count jumped by more than max_views_per_change:
-- no events are made up for them (int_view_events), and they are listed here instead of being
-- dropped silently. A warn-severity test flags any row, without stopping the feature build.

with

rejected as (

    select * from {{ ref('int_view_row_versions') }}
    where version_status = 'rejected_jump'

),

final as (

    select
        change_key,
        change_seq,
        changed_at,
        user_id,
        article_id,
        row_life,
        baseline_count,
        view_count,
        views_claimed

    from rejected

)

select * from final
