"""The sidebar panel (3D Viewport > N > OccNet): selection, settings, Reconstruct, progress, Cancel,
and the active result's live sliders."""

from __future__ import annotations

import bpy

from . import backend, export, jobs, live, preferences

MAX_LISTED = 6


class OCCNET_PT_main(bpy.types.Panel):
    bl_label = "OccNet Reconstruction"
    bl_idname = "OCCNET_PT_main"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "OccNet"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        job = jobs.active_job()
        if job is not None:
            self._draw_running(layout, job)
        else:
            self._draw_selection(layout, context)
            row = layout.row()
            row.scale_y = 1.5
            row.operator("occnet.reconstruct", icon="MOD_REMESH")
        status = getattr(context.window_manager, "occnet_status", None)
        if job is None and status is not None and status.message:
            box = layout.box()
            icon = "ERROR" if status.is_error else "INFO"
            for i, line in enumerate(preferences.wrap(status.message, 40)):
                box.label(text=line, icon=icon if i == 0 else "BLANK1")
            if status.job_dir or status.log_path:
                box.operator("occnet.open_job_folder", icon="FILEBROWSER")

    def _draw_selection(self, layout: bpy.types.UILayout, context: bpy.types.Context) -> None:
        selected = list(context.selected_objects)
        usable = [ob for ob in selected if ob.type in export.GEOMETRY_TYPES]
        col = layout.column(align=True)
        if not usable:
            col.label(text="Select mesh objects to reconstruct", icon="INFO")
            return
        for ob in usable[:MAX_LISTED]:
            faces = f"{len(ob.data.polygons):,} faces" if ob.type == "MESH" else ob.type.lower()
            col.label(text=f"{ob.name}  ({faces})", icon="OUTLINER_OB_MESH" if ob.type == "MESH" else "OBJECT_DATA")
        if len(usable) > MAX_LISTED:
            col.label(text=f"... and {len(usable) - MAX_LISTED} more")
        skipped = len(selected) - len(usable)
        if skipped:
            col.label(text=f"{skipped} non-mesh object(s) will be skipped", icon="ERROR")
        if len(usable) > 1 and getattr(context.scene, "occnet", None) is not None:
            layout.prop(context.scene.occnet, "mode", expand=True)

    def _draw_running(self, layout: bpy.types.UILayout, job: "jobs.Job") -> None:
        state = job.state
        col = layout.column(align=True)
        names = ", ".join(s.shape_id for s in job.shapes)
        col.label(text=f"Reconstructing {names}", icon="MOD_REMESH")
        if state.total:
            text = f"Step {state.step} / {state.total}" if state.phase == "training" else state.phase.capitalize()
            col.progress(factor=state.fraction, type="BAR", text=text)
        grid = layout.grid_flow(columns=2, even_columns=True, align=True)
        grid.label(text=f"Loss: {state.loss:.4f}" if state.loss is not None else "Loss: -")
        grid.label(text=f"IoU: {state.iou:.3f}" if state.iou is not None else "IoU: -")
        grid.label(text=f"ETA: {backend.format_seconds(state.eta_s)}" if state.eta_s is not None else "ETA: -")
        grid.label(text=f"Device: {state.device or '...'}")
        row = layout.row()
        row.scale_y = 1.3
        if job.cancelling:
            row.operator("occnet.cancel", text="Cancelling... (press to kill)", icon="CANCEL")
        else:
            row.operator("occnet.cancel", text="Cancel", icon="CANCEL")


class OCCNET_PT_settings(bpy.types.Panel):
    bl_label = "Settings"
    bl_idname = "OCCNET_PT_settings"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "OccNet"
    bl_parent_id = "OCCNET_PT_main"

    def draw(self, context: bpy.types.Context) -> None:
        props = getattr(context.scene, "occnet", None)
        if props is None:
            return
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        layout.enabled = jobs.active_job() is None
        col = layout.column(heading="Training", align=True)
        col.prop(props, "steps")
        col.prop(props, "points")
        col = layout.column(heading="Network", align=True)
        col.prop(props, "width")
        col.prop(props, "depth")
        row = layout.row(heading="Fourier", align=True)
        row.prop(props, "use_fourier", text="")
        sub = row.row(align=True)
        sub.active = props.use_fourier
        sub.prop(props, "fourier_frequencies", text="Frequencies")
        col = layout.column(heading="Surface", align=True)
        col.prop(props, "resolution")
        col.prop(props, "threshold")
        prefs = preferences.prefs_struct(context)
        if prefs is not None:
            layout.prop(prefs, "device")


class OCCNET_PT_live(bpy.types.Panel):
    """Live sliders of the active result: resolution, threshold, shape weights and A <-> B morph."""

    bl_label = "Live Surface"
    bl_idname = "OCCNET_PT_live"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "OccNet"
    bl_parent_id = "OCCNET_PT_main"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return live.is_result(context.active_object) and hasattr(context.active_object, "occnet_live")

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        ob = context.active_object
        props = ob.occnet_live
        layout.label(text=ob.name, icon="MESH_DATA")
        if not props.ready:
            layout.operator("occnet.live_update", text="Set Up Sliders", icon="MODIFIER")
            return
        col = layout.column(align=True)
        col.label(text="Resolution")
        col.row(align=True).prop(props, "resolution", expand=True)
        col.separator()
        col.prop(props, "threshold", slider=True)
        if len(props.weights) > 1:
            box = layout.box()
            box.label(text="Shape Morph", icon="SHAPEKEY_DATA")
            row = box.row(align=True)
            row.prop(props, "morph_a", text="")
            row.label(text="", icon="FORWARD")
            row.prop(props, "morph_b", text="")
            box.prop(props, "morph", slider=True)
            sub = box.column(align=True)
            sub.label(text="Shape Weights")
            for item in props.weights:
                sub.prop(item, "value", text=item.name, slider=True)
        st = live.status(ob)
        if st.state in ("pending", "updating"):
            layout.label(text=st.message or "Updating...", icon="SORTTIME")
        elif st.state == "error":
            box = layout.box()
            for i, line in enumerate(preferences.wrap(st.message, 40)[:8]):
                box.label(text=line, icon="ERROR" if i == 0 else "BLANK1")
        elif st.state == "ok":
            layout.label(text=st.message, icon="CHECKMARK")
        layout.operator("occnet.live_update", icon="FILE_REFRESH")


class OCCNET_PT_backend(bpy.types.Panel):
    bl_label = "Backend"
    bl_idname = "OCCNET_PT_backend"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "OccNet"
    bl_parent_id = "OCCNET_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        prefs = preferences.prefs_struct(context)
        if prefs is None:
            layout.label(text="Enable the add-on to edit its preferences")
        else:
            layout.prop(prefs, "python_path", text="Python")
            layout.prop(prefs, "work_dir", text="Work Folder")
        layout.operator("occnet.check_backend", icon="CHECKMARK")
        if prefs is not None and prefs.check_result:
            box = layout.box()
            for line in preferences.wrap(prefs.check_result, 40):
                box.label(text=line)


classes = (OCCNET_PT_main, OCCNET_PT_settings, OCCNET_PT_live, OCCNET_PT_backend)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
