package org.unifiedmfa.keycloak;

import java.util.HashSet;
import java.util.List;
import java.util.Set;

import org.keycloak.models.GroupModel;
import org.keycloak.models.UserModel;

/**
 * Who the step asks, by Keycloak group: the one decision taken on the Keycloak side. With
 * include groups set, only their members are asked; members of an exclude group never are.
 * A group is named by its path ({@code /staff/admins}) or by its bare name; membership counts
 * subgroups, as in Keycloak (a member of {@code /staff/admins} is in {@code /staff}).
 */
final class GroupFilter {
    private GroupFilter() {
    }

    static boolean asks(UserModel user, List<String> include, List<String> exclude) {
        if (include.isEmpty() && exclude.isEmpty()) {
            return true;
        }
        Set<String> names = membership(user);
        if (exclude.stream().anyMatch(names::contains)) {
            return false;
        }
        return include.isEmpty() || include.stream().anyMatch(names::contains);
    }

    /** Every path and name of the user's groups and of their ancestors. */
    private static Set<String> membership(UserModel user) {
        Set<String> names = new HashSet<>();
        user.getGroupsStream().forEach(group -> {
            for (GroupModel at = group; at != null; at = at.getParent()) {
                names.add(at.getName());
                names.add(path(at));
            }
        });
        return names;
    }

    private static String path(GroupModel group) {
        StringBuilder path = new StringBuilder();
        for (GroupModel at = group; at != null; at = at.getParent()) {
            path.insert(0, "/" + at.getName());
        }
        return path.toString();
    }
}
