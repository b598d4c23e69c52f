-- Every user's click history is ranked 1..n without gaps and holds at most click_history_size articles.

select
    user_id,
    count(*) as articles,
    min(click_rank) as lowest_rank,
    max(click_rank) as highest_rank

from {{ ref('user_click_histories') }}
group by user_id
having count(*) > {{ var('click_history_size') }}
    or min(click_rank) != 1
    or max(click_rank) != count(*)
